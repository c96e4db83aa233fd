"""usbmuxd: its addresses, its packets, a client connection, and the hotplug watcher built on them."""

from stationd.usbmux.address import AddressError, UsbmuxAddress, parse, resolve
from stationd.usbmux.client import UsbmuxConnection, UsbmuxError
from stationd.usbmux.packet import PacketError
from stationd.usbmux.watcher import UsbEvent, UsbWatcher

__all__ = [
    "AddressError",
    "PacketError",
    "UsbEvent",
    "UsbWatcher",
    "UsbmuxAddress",
    "UsbmuxConnection",
    "UsbmuxError",
    "parse",
    "resolve",
]
