"""Turn what pymobiledevice3, the OS and the device report into the station's errors, worded for the technician."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any

from pymobiledevice3 import exceptions as pmd

from stationd import errors

ERASE_HINT = "erase it (Settings › General › Transfer or Reset iPad) and replug"
CONNECTION_ERRORS = (
    pmd.ConnectionTerminatedError,
    pmd.MuxException,
    pmd.NotConnectedError,
    asyncio.IncompleteReadError,
    EOFError,
    ssl.SSLError,
    OSError,
)
GONE_ERRORS = (pmd.DeviceNotFoundError, pmd.NoDeviceConnectedError, pmd.BadDevError)
PASSCODE_ERRORS = (pmd.PasswordRequiredError, pmd.PasscodeRequiredError)

# lockdownd `Error` strings that mean "not now": libimobiledevice maps "ServiceLimit" to LOCKDOWN_E_SERVICE_LIMIT
# (too many service connections open at once: src/lockdown.c, lockdownd_strtoerr). No public source names an
# MCInstall reply code for "busy"; an MCInstall error the station does not know is retried once instead (see
# errors.DeviceRefused), which covers a busy reply too.
LOCKDOWN_BUSY = {"ServiceLimit"}

# MCInstall ErrorChain codes (MCInstallationErrorDomain, MCProfileErrorDomain, MCCloudConfigErrorDomain), as
# Apple Configurator and the public issue threads of pymobiledevice3 and go-ios report them.
SETUP_FINISHED = 14001
CLOUD_CONFIGURATION_PRESENT = 14002
CLOUD_CONFIGURATION_NOT_AVAILABLE = 33001
NO_NETWORK = 33002
PROFILE_NOT_FOUND = 1001
SUPERVISION_CODES = {13001, 13002, 13003}
PROFILE_DOMAIN = "MCProfileErrorDomain"


@dataclass(frozen=True)
class Subject:
    """Who a message is about: the device, and the organisation this station supervises for."""

    udid: str
    serial: str | None = None
    organization: str | None = None

    @property
    def who(self) -> str:
        return f"iPad {self.serial or self.udid}"

    @property
    def org(self) -> str:
        return self.organization or "this station's organisation"


def detail(error: BaseException, limit: int = 200) -> str:
    """A short description of an unexpected exception (its type and text, truncated)."""
    text = str(error).strip()
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_connection_error(error: BaseException) -> bool:
    """True for errors that mean the link broke (the device may or may not still be plugged in)."""
    return isinstance(error, CONNECTION_ERRORS) and not isinstance(
        error, (*GONE_ERRORS, pmd.ConnectionFailedToUsbmuxdError)
    )


def device_gone(subject: Subject) -> errors.DeviceGone:
    return errors.DeviceGone(f"{subject.who} is no longer connected: plug it back in and its work resumes.")


def connection_dropped(subject: Subject, error: BaseException) -> errors.ConnectionDropped:
    return errors.ConnectionDropped(
        f"The connection to {subject.who} dropped ({detail(error)}): if it keeps happening, try another cable or port."
    )


def translate(error: BaseException, subject: Subject, step: str) -> errors.StationError:
    """The StationError for an exception raised while doing `step` (e.g. "install a profile")."""
    if isinstance(error, errors.StationError):
        return error
    if isinstance(error, GONE_ERRORS):
        return device_gone(subject)
    if isinstance(error, pmd.ConnectionFailedToUsbmuxdError):
        return errors.ConnectionDropped(
            "usbmuxd cannot be reached: start it (systemctl start usbmuxd) or correct `usbmuxd` in the "
            "station's configuration."
        )
    if isinstance(error, PASSCODE_ERRORS):
        return errors.PasscodeLocked(
            f"{subject.who} is locked with a passcode and not supervised by {subject.org}: unlock it or erase it "
            "via recovery/the previous MDM, then replug."
        )
    if isinstance(error, pmd.MCProtectedError):
        return errors.PairingProhibited(
            f"{subject.who} does not allow pairing with a new computer (a restriction set by its MDM or "
            "configuration profile): remove the restriction in its MDM, or erase it from its MDM, then replug."
        )
    if isinstance(error, pmd.LockdownError) and getattr(error, "error", None) in LOCKDOWN_BUSY:
        return errors.DeviceBusy(f"{subject.who} is busy ({error.error}) while trying to {step}.")
    if isinstance(error, pmd.PairingDialogResponsePendingError):
        return errors.TrustPending(
            f"{subject.who} shows 'Trust This Computer?'. It is already set up and not supervised by "
            f"{subject.org}: tap Trust, or {ERASE_HINT}."
        )
    if isinstance(error, pmd.UserDeniedPairingError):
        return errors.PairingRefused(
            f"{subject.who} refused to pair (someone tapped Don't Trust): replug it and tap Trust, or {ERASE_HINT}."
        )
    if isinstance(error, pmd.SessionActiveError):
        # pymobiledevice3 replays the request that broke after reconnecting by itself; StartSession then collides.
        return connection_dropped(subject, error)
    if isinstance(error, pmd.InvalidHostIDError):
        return errors.ConnectionDropped(
            f"{subject.who} no longer knows this station's pairing (it was probably erased): "
            "the station pairs again by itself."
        )
    if isinstance(error, (pmd.PairingError, pmd.NotPairedError, pmd.FatalPairingError)):
        return errors.PairingRefused(
            f"{subject.who} did not complete pairing ({detail(error)}): replug it; if it happens again, {ERASE_HINT}."
        )
    if isinstance(error, TimeoutError):
        return errors.StepTimeout(f"{subject.who} did not answer in time while trying to {step}.")
    if isinstance(error, CONNECTION_ERRORS):
        return connection_dropped(subject, error)
    if isinstance(error, pmd.MobileActivationException):
        return errors.ActivationFailed(
            f"{subject.who} could not be activated ({detail(error)}): replug it to try again; if it keeps failing, "
            f"{ERASE_HINT}."
        )
    return refused(subject, step, detail(error))


def refused(subject: Subject, step: str, reason: str) -> errors.DeviceRefused:
    return errors.DeviceRefused(f"{subject.who} refused to {step} ({reason}).")


def error_code(reply: dict[str, Any]) -> int | None:
    """The first ErrorCode of an MCInstall reply's ErrorChain, if any."""
    chain = reply.get("ErrorChain") or []
    first = chain[0] if chain and isinstance(chain[0], dict) else {}
    code = first.get("ErrorCode")
    return code if isinstance(code, int) else None


def _description(reply: dict[str, Any]) -> tuple[str, str]:
    chain = reply.get("ErrorChain") or []
    first = chain[0] if chain and isinstance(chain[0], dict) else {}
    text = str(first.get("USEnglishDescription") or first.get("LocalizedDescription") or "no reason given")
    return text.strip().rstrip("."), str(first.get("ErrorDomain") or "")


def already_set_up(subject: Subject) -> errors.AlreadySetUp:
    return errors.AlreadySetUp(
        f"{subject.who} is already set up (past Setup Assistant), so it cannot take a configuration: {ERASE_HINT}."
    )


def mcinstall_error(reply: dict[str, Any], subject: Subject, step: str, profile: bool = False) -> errors.StationError:
    """The StationError for an MCInstall reply that is not `Status: Acknowledged` (`profile`: a profile request)."""
    code = error_code(reply)
    description, domain = _description(reply)
    serial = subject.serial or subject.udid
    if code == CLOUD_CONFIGURATION_NOT_AVAILABLE:
        return errors.DepNotAssigned(
            f"Serial {serial} is not assigned to an MDM server in Apple School/Business Manager: assign it to your "
            "MDM server there, then replug the iPad."
        )
    if code == NO_NETWORK:
        return errors.NoNetwork(
            f"{subject.who} has no network, so it cannot reach Apple: check [wifi] ssid and password in the "
            "configuration and that the network is in range, then replug."
        )
    if code == SETUP_FINISHED:
        return already_set_up(subject)
    if code == CLOUD_CONFIGURATION_PRESENT:
        return errors.ForeignConfiguration(
            f"{subject.who} already holds a configuration ({description}): {ERASE_HINT}."
        )
    if code in SUPERVISION_CODES:
        return errors.NotSupervisedByUs(
            f"{subject.who} is not supervised by {subject.org} ({description}): {ERASE_HINT} so the station "
            "can supervise it."
        )
    if profile or domain == PROFILE_DOMAIN:
        return errors.ProfileRejected(
            f"{subject.who} rejected the profile: {description}. Fix the profile, then replug."
        )
    where = " ".join(part for part in (domain, f"error {code}" if code is not None else "") if part)
    return refused(subject, step, f"{description}; {where}" if where else description)
