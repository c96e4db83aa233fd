"""One error taxonomy for the whole station.

Every failure a technician can meet is a `StationError` with a stable `code` (stored, exported, shown on the
dashboard), a message that says what happened and what to do, and `transient`: whether retrying the same step
(with backoff) can help. Device-protocol exceptions are translated into these at the device layer, so nothing above
it sees pymobiledevice3's exceptions.
"""

from __future__ import annotations

from typing import Any


class StationError(Exception):
    code = "error"
    transient = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class DeviceGone(StationError):
    """The device was unplugged or detached; its job resumes when it comes back."""

    code = "device_gone"
    transient = True


class ConnectionDropped(StationError):
    code = "connection_dropped"
    transient = True


class StepTimeout(StationError):
    code = "timeout"
    transient = True


class DeviceBusy(StationError):
    code = "device_busy"
    transient = True


class TrustPending(StationError):
    code = "trust_pending"


class PairingRefused(StationError):
    code = "pairing_refused"


class PasscodeLocked(StationError):
    code = "passcode_locked"


class ActivationLocked(StationError):
    code = "activation_locked"


class ActivationFailed(StationError):
    code = "activation_failed"


class ActivationServerUnavailable(StationError):
    code = "activation_server_unavailable"
    transient = True


class AlreadySupervised(StationError):
    code = "supervised_elsewhere"


class DepAssignedElsewhere(StationError):
    code = "dep_assigned_elsewhere"


class DepNotAssigned(StationError):
    code = "dep_not_assigned"


class NoNetwork(StationError):
    code = "no_network"


class ProfileRejected(StationError):
    code = "profile_rejected"


class EnrollmentUnavailable(StationError):
    code = "enrollment_unavailable"
    transient = True


class EnrollmentInvalid(StationError):
    code = "enrollment_invalid"


class NotSupervisedByUs(StationError):
    code = "not_supervised_by_us"


class DeviceRefused(StationError):
    """The device answered a request with an error we have no better name for."""

    code = "device_refused"


class ConfigurationError(StationError):
    code = "configuration"
