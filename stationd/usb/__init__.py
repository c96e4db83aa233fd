"""USB hotplug: where usbmuxd listens, and a watcher of its Attached/Detached notifications."""

from stationd.usb.address import (
    parse_usbmux_address,
    pymobiledevice3_address,
    resolve_usbmux_address,
)
from stationd.usb.watcher import UsbEvent, UsbmuxProtocolError, UsbWatcher

__all__ = [
    "UsbEvent",
    "UsbWatcher",
    "UsbmuxProtocolError",
    "parse_usbmux_address",
    "pymobiledevice3_address",
    "resolve_usbmux_address",
]
