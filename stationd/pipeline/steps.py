"""The steps of the pipeline. Each is idempotent: run again after an unplug, a crash or a retry, it finds what is
already done on the device (or in the job's saved data) and does only what is missing."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from stationd import outbound
from stationd.device import SessionOpener
from stationd.device.inventory import inventory
from stationd.errors import (
    AppNotInstalled,
    ChargeHeld,
    ConfigurationError,
    EnrollmentInvalid,
    EnrollmentUnavailable,
    EraseNotStarted,
    NotOnWorkList,
    WaitingForAssignment,
)
from stationd.ipa import IpaInvalid, read_package
from stationd.pipeline import verdicts
from stationd.profiles import ProfileInvalid, payload_types, validate_profile
from stationd.redact import redact_url

NAMING_COUNTER = "naming"

if TYPE_CHECKING:
    from stationd.pipeline.worker import StepContext
    from stationd.store import JobRecord


@dataclass
class Outcome:
    """What a step leaves: data to merge into the job, and whether the device must first detach and come back."""

    data: dict[str, Any] = field(default_factory=dict)
    await_reattach: bool = False
    name: str | None = None  # the device's new name, recorded with the step's end


async def identify(ctx: StepContext) -> Outcome:
    """What the iPad is (read at every session), what it arrived with (apps, profiles, supervision, battery health)
    and what the work list says of it. The arrival inventory and the listing stay in the job (later steps need no
    database); the device record keeps the latest facts (the report step's). With [queue] unknown = "hold", an iPad
    that is not on the list is held, untouched."""
    facts = ctx.facts
    listed = await ctx.pipeline.jobs.work_item(facts.serial)
    if listed is None and ctx.config.queue.unknown == "hold":
        raise NotOnWorkList(
            f"iPad {facts.serial} is not on the work list, so the station leaves it untouched. Add its serial "
            "(stationd queue import) and it starts by itself, or take it away.",
            recheck=60.0,
        )
    held = await inventory(ctx.session)
    await ctx.record_facts(held)
    data: dict[str, Any] = {
        "serial": facts.serial,
        "product_type": facts.product_type,
        "version": facts.product_version,
        **held,
    }
    if listed is not None:
        data["listed"] = {"name": listed.name, "group": listed.group, "notes": listed.notes}
    return Outcome(data)


async def charge(ctx: StepContext) -> Outcome:
    """Hold an iPad below `steps.min_battery` until it has charged: before its erase, so that none stalls half set
    up when it runs flat. The level is read afresh at every look (a new session each `steps.charge_recheck`)."""
    level, minimum = ctx.facts.battery_level, ctx.config.steps.min_battery
    if level is None:
        return Outcome({"level": None, "note": "the iPad reports no battery level; not held"})
    if level >= minimum:
        return Outcome({"level": level})
    who = f"iPad {ctx.facts.serial}"
    if ctx.facts.charging is False:
        message = (
            f"Not charging ({level} %): {who} needs {minimum} % before it is set up, and this port gives it too "
            "little power. Move it to a port that charges (or a powered hub); it goes on by itself."
        )
    else:
        message = f"Charging ({level} %): {who} goes on by itself at {minimum} %."
    raise ChargeHeld(message, recheck=ctx.config.steps.charge_recheck, level=level)


async def erase_proven(sessions: SessionOpener, udid: str, job: JobRecord, device_id: int | None) -> bool:
    """Whether the erase this job requested has happened, judged before anything pairs with the iPad again.

    Proof of wipe: the iPad no longer holds the pairing the request was sent over (an erase forgets every
    pairing; the station pairs with a new HostID each time, so no later pairing can stand in for it). A fresh
    iPad looks wiped in every other way (unactivated, no configuration), and an iPad that acknowledged
    EraseDevice but has not gone down yet still holds that pairing, so neither can pass for erased."""
    saved = job.step_data.get("erase") or {}
    if "erase" in job.completed_steps or not saved.get("pairing"):
        return False
    return not await sessions.pairing_known(udid, saved["pairing"], device_id)


async def erase(ctx: StepContext) -> Outcome:
    """Erase once per job.

    The request is written ahead of sending it, with the pairing it goes over. Once the iPad has forgotten that
    pairing it has erased (`erase_proven`, checked by the worker before it pairs again). While it still holds it,
    the iPad has not erased: it gets `timeouts.erase_start` to go down, then the request again (bounded by
    `timeouts.retries`). So an iPad is never erased twice, and never counted as erased when it was not.
    """
    saved = ctx.job.step_data.get("erase", {})
    if saved.get("pairing"):
        if time.time() - saved["requested_at"] < ctx.config.timeouts.erase_start:
            return Outcome(await_reattach=True)
        resends = saved.get("resends", 0) + 1
        if resends > ctx.config.timeouts.retries:
            raise EraseNotStarted(
                f"iPad {ctx.facts.serial} accepted the erase request {resends} times but never erased. Erase it by "
                "hand (Settings › General › Transfer or Reset iPad › Erase All Content and Settings), then replug it."
            )
        await ctx.checkpoint("erase", {"resends": resends, "requested_at": time.time(), "sent": False})
    else:
        await ctx.checkpoint("erase", {"requested_at": time.time(), "pairing": ctx.session.pairing, "sent": False})
    await ctx.session.mc.erase()
    await ctx.checkpoint("erase", {"sent": True})
    return Outcome(await_reattach=True)


async def activate(ctx: StepContext) -> Outcome:
    state = await ctx.session.activate(ctx.http, ctx.config.activation.url)
    return Outcome({"activation_state": state})


def _erased(ctx: StepContext) -> bool:
    return "erase" in ctx.job.completed_steps and bool(ctx.job.step_data.get("erase", {}).get("confirmed"))


async def supervise(ctx: StepContext) -> Outcome:
    steps, organization = ctx.config.steps, ctx.config.organization.name
    configuration = await ctx.session.mc.supervise(
        organization, list(steps.skip_setup), language=steps.language, region=steps.region
    )
    verdicts.judge_supervision(
        configuration,
        organization=organization,
        certificate_der=ctx.identity_certificate,
        serial=ctx.facts.serial,
        erased=_erased(ctx),
        dep_url=ctx.config.enrollment.dep_url,
    )
    return Outcome({"organization": configuration.get("OrganizationName")})


def _profile(data: bytes, source: str) -> dict[str, Any]:
    try:
        return validate_profile(data, source)
    except ProfileInvalid as e:
        raise ConfigurationError(f"{e} Fix the file and replug the iPad.") from e


async def wifi(ctx: StepContext) -> Outcome:
    wifi_config = ctx.config.wifi
    assert wifi_config is not None
    source = str(wifi_config.profile) if wifi_config.profile else "the [wifi] section"
    try:
        data = wifi_config.mobileconfig()
    except OSError as e:
        raise ConfigurationError(f"cannot read the Wi-Fi profile {source}: {e.strerror}") from e
    profile = _profile(data, source)
    # In DEP mode Wi-Fi comes before supervision (the iPad needs it to reach Apple): installed while still in
    # Setup Assistant, where no prompt is shown.
    await ctx.session.mc.install_profile(data, silent=ctx.config.enrollment.mode != "dep")
    return Outcome({"profile": profile.get("PayloadIdentifier")})


async def profiles(ctx: StepContext) -> Outcome:
    installed = []
    for path in ctx.config.profiles.extra:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ConfigurationError(f"cannot read the profile {path}: {e.strerror}") from e
        profile = _profile(data, str(path))
        await ctx.session.mc.install_profile(data)
        installed.append(profile.get("PayloadIdentifier"))
    return Outcome({"installed": installed})


async def fetch_enrollment_profile(http: httpx.AsyncClient, url: str) -> bytes:
    """GET the MDM's Apple Configurator enrollment URL and check it answered an enrollment profile."""
    shown = redact_url(url)
    try:
        response = await outbound.fetch(http, "GET", url, follow_redirects=True)
    except outbound.Unreachable as e:
        raise EnrollmentUnavailable(f"The enrollment URL {shown} cannot be reached ({e}).") from e
    except outbound.OutboundError as e:
        raise EnrollmentInvalid(f"The enrollment URL cannot be used: {e}. Check enrollment.url.") from e
    if response.status_code >= 500:
        raise EnrollmentUnavailable(
            f"The enrollment URL {shown} answered {response.status_code}: the MDM is having trouble."
        )
    if response.status_code != 200:
        raise EnrollmentInvalid(
            f"The enrollment URL answered {response.status_code}: check enrollment.url against the MDM's "
            '"Apple Configurator enrollment URL".'
        )
    try:
        profile = validate_profile(response.content, shown)
    except ProfileInvalid as e:
        kind = response.headers.get("content-type", "unknown type")
        raise EnrollmentInvalid(
            f"The enrollment URL did not return an enrollment profile (got {kind}): {e} Check enrollment.url."
        ) from e
    if "com.apple.mdm" not in payload_types(profile):
        raise EnrollmentInvalid(
            "The enrollment URL returned a profile without an MDM payload: it is not the MDM's enrollment profile. "
            "Check enrollment.url."
        )
    return response.content


async def enroll(ctx: StepContext) -> Outcome:
    if ctx.config.enrollment.mode == "dep":
        configuration = await ctx.session.mc.download_cloud_configuration()
        verdicts.judge_dep(
            configuration,
            organization=ctx.config.organization.name,
            certificate_der=ctx.identity_certificate if "profiles" in ctx.plan else None,
            serial=ctx.facts.serial,
            dep_url=ctx.config.enrollment.dep_url,
        )
        return Outcome({"mode": "dep", "organization": configuration.get("OrganizationName")})
    url = ctx.config.enrollment.url or ""
    data = await fetch_enrollment_profile(ctx.http, url)
    await ctx.session.mc.store_enrollment_profile(data)
    return Outcome({"mode": "url"})


async def name(ctx: StepContext) -> Outcome:
    """The name from the work list when it gives one, else the pattern's."""
    naming = ctx.config.naming
    listed = (ctx.job.step_data.get("identify") or {}).get("listed") or {}
    if listed.get("name"):
        await ctx.session.set_name(listed["name"])
        return Outcome({"name": listed["name"], "from": "work list"}, name=listed["name"])
    device_name = naming.device_name(
        org=ctx.config.organization.name,
        serial=ctx.facts.serial,
        model=ctx.facts.product_type,
        port=ctx.port_label or "",
        n=await ctx.number("name", NAMING_COUNTER) if naming.numbered else 0,
    )
    await ctx.session.set_name(device_name)
    return Outcome({"name": device_name}, name=device_name)


async def assignment(ctx: StepContext) -> Outcome:
    """DEP mode with `enrollment.hold_until_assigned`: go on only once the serial is verified as assigned in Apple
    School/Business Manager (by the asm reporter, `stationd asm assign` or `stationd asm check`); until then the iPad
    is held, not erased, and its serial is asked to be checked."""
    serial = ctx.facts.serial
    found = await ctx.pipeline.jobs.assignment(serial)
    if found is not None and found.status == "assigned":
        return Outcome({"server": found.server, "activity": found.activity, "verified_at": found.checked_at})
    if found is None or found.status == "unknown":
        await ctx.pipeline.jobs.want_assignment(serial)
    if found is not None and found.status == "pending":
        why = f'it was sent to "{found.server}" (activity {found.activity}) and is not verified yet'
    elif found is not None and found.message:
        why = found.message
    else:
        why = f"serial {serial} is not known to be assigned to your MDM server yet"
    raise WaitingForAssignment(
        f"Waiting for Apple School Manager: {why}. The iPad is not erased until then and goes on by itself once "
        f'the serial is assigned (stationd asm assign {serial} --to "YOUR MDM SERVER", or the asm plugin with '
        "assign_held = true)."
    )


async def apps(ctx: StepContext) -> Outcome:
    """Install each .ipa of `[apps] install` the iPad does not list in that version, then Browse again: only the
    iPad listing every one counts."""
    packages = []
    for path in ctx.config.apps.install:
        try:
            packages.append(read_package(path))
        except IpaInvalid as e:
            raise ConfigurationError(f"{e} Fix [apps] install (stationd check-config), then replug the iPad.") from e
    bundle_ids = [package.bundle_id for package in packages]
    listed = {app["bundle_id"]: app for app in await ctx.session.apps.installed(bundle_ids)}
    for package in packages:
        if not package.matches(listed.get(package.bundle_id)):
            await ctx.session.apps.install(package.path)
    listed = {app["bundle_id"]: app for app in await ctx.session.apps.installed(bundle_ids)}
    missing = [package for package in packages if not package.matches(listed.get(package.bundle_id))]
    if missing:
        names = ", ".join(f"{p.bundle_id} {p.version} ({p.build})" for p in missing)
        raise AppNotInstalled(
            f"iPad {ctx.facts.serial} accepted {names} but does not list it as installed: replug it to try again."
        )
    installed = [{"bundle_id": p.bundle_id, "version": p.version, "build": p.build} for p in packages]
    return Outcome({"installed": installed})


async def report(ctx: StepContext) -> Outcome:
    """What the iPad leaves with (apps, profiles, supervision), read back into its record for the report; battery
    health is read again only when identify could not read it."""
    arrived = ctx.job.step_data.get("identify") or {}
    held = await inventory(ctx.session, battery=arrived.get("battery_health") is None)
    await ctx.record_facts(held)
    health = {key: arrived.get(key) for key in ("battery_health", "cycle_count")}
    return Outcome({"serial": ctx.facts.serial, "facts": {**ctx.facts.as_dict(), **health, **held}})


STEP_FUNCTIONS: dict[str, Callable[[StepContext], Awaitable[Outcome]]] = {
    "identify": identify,
    "assignment": assignment,
    "charge": charge,
    "erase": erase,
    "activate": activate,
    "supervise": supervise,
    "wifi": wifi,
    "profiles": profiles,
    "apps": apps,
    "enroll": enroll,
    "name": name,
    "report": report,
}
