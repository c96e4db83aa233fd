"""The only code that talks to a device: one paired session per device (lockdown, and its MCInstall client as
`session.mc`), errors translated for the technician."""

from stationd.device.mcinstall import MCInstall
from stationd.device.session import DeviceFacts, DeviceSession, SupervisorIdentity, pairing_known

__all__ = ["DeviceFacts", "DeviceSession", "MCInstall", "SupervisorIdentity", "pairing_known"]
