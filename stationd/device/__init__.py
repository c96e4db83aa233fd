"""The only code that talks to a device: one paired session per device, errors translated for the technician."""

from stationd.device.session import DeviceFacts, DeviceSession, SupervisorIdentity

__all__ = ["DeviceFacts", "DeviceSession", "SupervisorIdentity"]
