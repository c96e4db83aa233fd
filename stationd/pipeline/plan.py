"""Which steps a device goes through, in order, for a configuration."""

from __future__ import annotations

from stationd.config import Config
from stationd.errors import ConfigurationError

STEPS = (
    "identify",
    "charge",
    "assignment",
    "erase",
    "activate",
    "supervise",
    "wifi",
    "profiles",
    "apps",
    "enroll",
    "name",
    "report",
)


def plan(config: Config) -> list[str]:
    """The ordered steps for this configuration.

    Manual enrollment ("url") supervises the device with our identity, then delivers the MDM's profile. In "dep"
    mode the cloud configuration comes from Apple: we skip our own and install Wi-Fi first so the device can reach
    Apple; the silent steps after it need our supervision certificate in the MDM's DEP profile.
    """
    mode = config.enrollment.mode
    if mode == "dep" and config.wifi is None:
        raise ConfigurationError(
            'enrollment.mode = "dep" needs a [wifi] section: the iPad must reach Apple to fetch its configuration.'
        )
    steps = ["identify"]
    if config.steps.min_battery:
        steps.append("charge")  # before any erase: an iPad that runs flat mid-setup stalls half prepared
    if mode == "dep" and config.enrollment.hold_until_assigned:
        steps.append("assignment")  # before the erase: an unassigned iPad waits, not erased into no configuration
    if config.steps.erase:
        steps.append("erase")
    if config.steps.activate:
        steps.append("activate")
    if mode == "dep":
        steps += ["wifi", "enroll", "profiles", "apps"]
    else:
        steps.append("supervise")
        if config.wifi is not None:
            steps.append("wifi")
        steps += ["profiles", "apps"]
        if mode == "url":
            steps.append("enroll")
    steps += ["name", "report"]
    if not config.profiles.extra:
        steps.remove("profiles")
    if not config.apps.install:
        steps.remove("apps")
    return steps
