"""Virtual iPads: usbmuxd, lockdownd (with TLS) and the device services behind it as a real client sees them."""

from stationd.emulator.emulator import Emulator
from stationd.emulator.ipad import (
    Behaviour,
    DepAssignment,
    DeviceSpec,
    Fault,
    Latency,
    VirtualDevice,
    generated_spec,
)

__all__ = [
    "Behaviour",
    "DepAssignment",
    "DeviceSpec",
    "Emulator",
    "Fault",
    "Latency",
    "VirtualDevice",
    "generated_spec",
]
