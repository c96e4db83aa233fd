"""Whose configuration an iPad holds, judged by its content, never by the reply code that came with it.

Where Apple documents nothing, iPads differ: a DEP configuration may say `ConfigurationSource` 0 or 1; an iPad may
fetch it at activation or only when asked; an unassigned serial may answer 33001 or acknowledge and apply nothing.
So the station reads the configuration the iPad holds after each request and judges that: our organisation (or our
MDM's DEP enrollment URL) is ours; any other organisation is someone else's; nothing is nothing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from stationd import errors
from stationd.device.mcinstall import supervised_by

CERTIFICATE_HINT = (
    "your MDM's enrollment (DEP) profile does not list this station's supervision certificate: add it there "
    "(the MDM may call it the supervision identity), then replug the iPad; the station erases it again so it "
    "fetches the corrected profile"
)


def _normal(name: Any) -> str:
    return " ".join(str(name or "").split()).casefold()


def _same_url(a: str, b: str) -> bool:
    one, two = urlsplit(a), urlsplit(b)
    return (one.scheme, one.netloc.lower(), one.path.rstrip("/")) == (
        two.scheme,
        two.netloc.lower(),
        two.path.rstrip("/"),
    )


def is_ours(configuration: dict[str, Any], organization: str, dep_url: str | None = None) -> bool:
    """The configuration names our organisation, or points at our MDM's DEP enrollment URL."""
    if configuration.get("OrganizationName") and _normal(configuration["OrganizationName"]) == _normal(organization):
        return True
    url = configuration.get("ConfigurationURL")
    return bool(dep_url and isinstance(url, str) and _same_url(url, dep_url))


def owner_name(configuration: dict[str, Any]) -> str:
    return str(configuration.get("OrganizationName") or "another organisation")


def assigned_elsewhere(configuration: dict[str, Any], serial: str) -> errors.DepAssignedElsewhere:
    owner = owner_name(configuration)
    return errors.DepAssignedElsewhere(
        f"Serial {serial} is assigned to {owner}'s MDM in Apple School/Business Manager, so Apple hands the iPad "
        f"{owner}'s configuration: ask {owner} to release serial {serial}, then replug the iPad (the station erases it "
        "again so it fetches its new assignment)."
    )


def judge_supervision(
    configuration: dict[str, Any],
    *,
    organization: str,
    certificate_der: bytes,
    serial: str,
    erased: bool,
    dep_url: str | None = None,
) -> None:
    """URL mode, after `supervise`: raise unless the iPad is supervised by us with our certificate.

    `erased`: the station erased it in this job, so a configuration it holds that we did not write came from Apple
    (a DEP assignment), whatever its fields say."""
    ours = is_ours(configuration, organization, dep_url)
    if ours and supervised_by(configuration, certificate_der):
        return
    if ours and erased:
        raise errors.DepCertificateMissing(
            f"iPad {serial} fetched {owner_name(configuration)}'s configuration from Apple School/Business Manager, "
            f"but {CERTIFICATE_HINT}."
        )
    if ours:
        raise errors.AlreadySupervised(
            f"iPad {serial} is supervised by {owner_name(configuration)} with another supervision identity: import "
            "that identity (stationd identity import), or erase the iPad (steps.erase = true) and replug."
        )
    if erased:
        raise assigned_elsewhere(configuration, serial)
    owner = owner_name(configuration)
    if configuration.get("IsSupervised"):
        raise errors.AlreadySupervised(
            f"iPad {serial} is supervised by {owner}: erase it (steps.erase = true, or Settings › General › Transfer "
            f"or Reset iPad) and replug; if it comes back supervised by {owner}, ask {owner} to release serial "
            f"{serial} in Apple School/Business Manager."
        )
    raise errors.ForeignConfiguration(
        f"iPad {serial} holds a configuration from {owner} (not supervised): erase it (steps.erase = true, or "
        "Settings › General › Transfer or Reset iPad) and replug."
    )


def judge_dep(
    configuration: dict[str, Any],
    *,
    organization: str,
    certificate_der: bytes | None,
    serial: str,
    dep_url: str | None = None,
) -> None:
    """DEP mode, after asking the iPad to fetch its configuration: raise unless it holds ours.

    `certificate_der`: when later steps install profiles silently, our certificate must be a supervisor."""
    if not configuration:
        raise errors.DepNotAssigned(
            f"Serial {serial} is not assigned to an MDM server in Apple School/Business Manager (the iPad found no "
            "configuration for it): assign it to your MDM server there, then replug the iPad."
        )
    if not is_ours(configuration, organization, dep_url):
        raise assigned_elsewhere(configuration, serial)
    if certificate_der is not None and not supervised_by(configuration, certificate_der):
        raise errors.DepCertificateMissing(
            f"iPad {serial} fetched {owner_name(configuration)}'s configuration, but {CERTIFICATE_HINT}; or leave "
            "profiles.extra empty and let the MDM push the profiles."
        )
