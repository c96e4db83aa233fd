"""One error taxonomy for the whole station.

Every failure a technician can meet is a `StationError` with a stable `code` (stored, exported, shown on the
dashboard), a `title` (the dashboard's headline for that code), a message that says what happened and what to do,
and `transient`: whether retrying the same step (with backoff) can help. `retries` caps the retries of one error
below `timeouts.retries` (an unknown device error is worth one more try, not three). Device-protocol exceptions are
translated into these at the device layer, so nothing above it sees pymobiledevice3's exceptions.
"""

from __future__ import annotations

from typing import Any


class StationError(Exception):
    code = "error"
    title = "Needs a hand"
    transient = False
    retries: int | None = None  # None: as many as timeouts.retries allows
    restart_job = False  # a replug starts a new job (erase again) instead of resuming this one

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class DeviceGone(StationError):
    """The device was unplugged or detached; its job resumes when it comes back."""

    code = "device_gone"
    title = "Unplugged"
    transient = True


class ConnectionDropped(StationError):
    code = "connection_dropped"
    title = "Connection lost"
    transient = True


class StepTimeout(StationError):
    code = "timeout"
    title = "Took too long"
    transient = True


class DeviceBusy(StationError):
    code = "device_busy"
    title = "iPad busy"
    transient = True


class Held(StationError):
    """The iPad waits for something outside the station (its charge, Apple School Manager, the work list, the fleet
    database): its port shows "held" with the message, and the step is tried again every `recheck` seconds, or at
    once when an operator nudges it, without using its retries. Subclasses name what it waits for."""

    code = "held"
    title = "Waiting"

    def __init__(self, message: str, *, recheck: float = 30.0, **details: Any) -> None:
        super().__init__(message, **details)
        self.recheck = recheck


class WaitingForAssignment(Held):
    """DEP mode: the iPad's serial is not (yet) assigned to our MDM server in Apple School/Business Manager, so it is
    not erased: erased now, it would fetch no configuration, or another server's."""

    code = "waiting_for_asm"
    title = "Waiting for Apple School Manager"


class ChargeHeld(Held):
    """Below `steps.min_battery`: held before anything is done to it, looked at again until it has charged."""

    code = "charging"
    title = "Charging"


class NotOnWorkList(Held):
    """[queue] unknown = "hold": an iPad whose serial is not on the work list is not touched."""

    code = "not_on_work_list"
    title = "Not on the work list"


class FleetUnreachable(Held):
    """The fleet's database cannot be reached: a new iPad waits (iPads already in progress carry on)."""

    code = "fleet_unreachable"
    title = "Fleet database unreachable"


class HeldElsewhere(Held):
    """The iPad's job runs at another station of the fleet, whose hold on it has not expired."""

    code = "held_elsewhere"
    title = "In progress at another station"


class InternalError(StationError):
    """A bug in the station (or a plugin of the pipeline): this iPad stops, every other one carries on."""

    code = "internal_error"
    title = "Station error"


class TrustPending(StationError):
    code = "trust_pending"
    title = "Tap Trust on the iPad"


class NotTrusted(StationError):
    """A read-only caller found no pairing and did not pair (which could show the trust dialog)."""

    code = "not_trusted"
    title = "Does not trust this station"


class PairingRefused(StationError):
    code = "pairing_refused"
    title = "Trust refused"


class PairingProhibited(StationError):
    code = "pairing_prohibited"
    title = "Pairing not allowed"


class PasscodeLocked(StationError):
    code = "passcode_locked"
    title = "Passcode is set"


class ActivationLocked(StationError):
    code = "activation_locked"
    title = "Activation Lock"


class ActivationFailed(StationError):
    code = "activation_failed"
    title = "Activation failed"


class ActivationServerUnavailable(StationError):
    code = "activation_server_unavailable"
    title = "Apple activation unreachable"
    transient = True


class ActivationServerRefused(StationError):
    code = "activation_server_refused"
    title = "Activation server refused"


class AlreadySupervised(StationError):
    code = "supervised_elsewhere"
    title = "Supervised by another organisation"


class ForeignConfiguration(StationError):
    """Holds another organisation's configuration without being supervised by it."""

    code = "configured_elsewhere"
    title = "Configured by another organisation"


class AlreadySetUp(StationError):
    code = "already_set_up"
    title = "Already set up"


class SupervisionNotApplied(StationError):
    code = "supervision_not_applied"
    title = "Supervision did not take"


class DepAssignedElsewhere(StationError):
    code = "dep_assigned_elsewhere"
    title = "Assigned to another organisation"
    restart_job = True  # once released, it must be erased again to fetch the new assignment


class DepNotAssigned(StationError):
    code = "dep_not_assigned"
    title = "Not assigned in Apple School Manager"


class DepCertificateMissing(StationError):
    code = "dep_certificate_missing"
    title = "Station missing from the DEP profile"
    restart_job = True


class NoNetwork(StationError):
    code = "no_network"
    title = "No network"


class ProfileRejected(StationError):
    code = "profile_rejected"
    title = "Profile rejected"


class ProfileNotInstalled(StationError):
    code = "profile_not_installed"
    title = "Profile not installed"


class AppRejected(StationError):
    code = "app_rejected"
    title = "App refused"


class AppNotInstalled(StationError):
    code = "app_not_installed"
    title = "App not installed"
    transient = True
    retries = 1


class EnrollmentUnavailable(StationError):
    code = "enrollment_unavailable"
    title = "MDM unreachable"
    transient = True


class EnrollmentInvalid(StationError):
    code = "enrollment_invalid"
    title = "MDM enrollment failed"


class EnrollmentNotStored(StationError):
    code = "enrollment_not_stored"
    title = "Enrollment profile not kept"


class NotSupervisedByUs(StationError):
    code = "not_supervised_by_us"
    title = "Not supervised by this station"


class NameNotApplied(StationError):
    code = "name_not_applied"
    title = "Name not taken"


class EraseNotStarted(StationError):
    code = "erase_not_started"
    title = "Erase did not start"


class EraseTimeout(StationError):
    code = "erase_timeout"
    title = "Did not come back after erasing"


class DeviceRefused(StationError):
    """The device answered a request with an error we have no better name for: worth one more try."""

    code = "device_refused"
    title = "iPad refused the request"
    transient = True
    retries = 1


class ConfigurationError(StationError):
    code = "configuration"
    title = "Station configuration problem"


class BlueprintError(ConfigurationError):
    """The fleet's blueprint cannot be pushed or used; the message says what to do."""

    code = "blueprint_unusable"
    title = "Blueprint cannot be used"


def _all(cls: type[StationError]) -> list[type[StationError]]:
    return [cls] + [sub for child in cls.__subclasses__() for sub in _all(child)]


TITLES: dict[str, str] = {cls.code: cls.title for cls in _all(StationError)}
RESTART_JOB_CODES = frozenset(cls.code for cls in _all(StationError) if cls.restart_job)


def title(code: str | None) -> str | None:
    """The dashboard's headline for an error code (the message says what to do)."""
    if code is None:
        return None
    return TITLES.get(code, code.replace("_", " ").capitalize())
