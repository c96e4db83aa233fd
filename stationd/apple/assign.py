"""Assigning serials to an MDM server, and proving it per serial.

One `orgDeviceActivities` ASSIGN_DEVICES call carries the whole batch. Its COMPLETED proves nothing per serial: the
activity's log (`downloadUrl`, a CSV of serial, status, substatus) settles each serial it names; only a serial it
leaves open costs a GET of `relationships/assignedServer`. The activity is written ahead (`note`): a station stopped
after the POST resumes polling the same activity; one stopped around the POST, not knowing whether Apple got it,
first looks where each serial is, and posts again only those not there yet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from stationd.apple.client import (
    AppleClient,
    AppleError,
    BudgetSpent,
    NotInOrganisation,
    Server,
    not_in_organisation,
)

FINISHED = ("COMPLETED", "FAILED", "STOPPED")
MOVED = ("SUCCESS", "SUCCEEDED", "COMPLETED", "COMPLETED_WITH_SUCCESS")
NOT_FOUND_WORDS = ("NOT_FOUND", "NOT_IN_ORG", "INVALID_DEVICE", "DEVICE_NOT")

Note = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Verdict:
    """Where one serial ended: `moved` to the server, or not, with why in plain words."""

    serial: str
    moved: bool
    message: str
    activity: str | None = None


async def assign(
    client: AppleClient,
    serials: list[str],
    server: Server,
    *,
    progress: dict[str, Any] | None = None,
    note: Note | None = None,
    poll: float = 30.0,
) -> dict[str, Verdict]:
    """Assign `serials` to `server` in one activity and verify each; `progress` is what an earlier try wrote
    ahead through `note` (the activity it posted). Raises `AppleError` when Apple cannot be asked now."""
    progress = dict(progress or {})
    wanted = list(dict.fromkeys(serials))
    verdicts: dict[str, Verdict] = {}
    activity = progress.get("activity") if progress.get("server") == server.id else None

    async def write(notes: dict[str, Any]) -> None:
        if note is not None:
            await note(notes)

    if activity is None:
        if progress.get("posting") and progress.get("server") == server.id:
            for serial in wanted:
                found = await where_is(client, serial, server)
                if found.moved:
                    verdicts[serial] = found
            wanted = [serial for serial in wanted if serial not in verdicts]
            if not wanted:
                return verdicts
        await write({"posting": True, "server": server.id})
        try:
            activity = await client.post_activity(wanted, server.id)
        except AppleError as error:
            if isinstance(error, BudgetSpent) or error.status:  # nothing sent, or Apple answered: no activity
                await write({"posting": False})
            raise
        await write({"posting": False, "server": server.id, "activity": activity})
    attributes = await finished(client, activity, poll)
    rows: list[dict[str, str]] = []
    if attributes.get("downloadUrl"):
        rows = await client.activity_log(str(attributes["downloadUrl"]))
    logged = {row.get("serial_number") or row.get("serial") or "": row for row in rows}
    state = f"{attributes.get('status')}" + (f" ({attributes['subStatus']})" if attributes.get("subStatus") else "")
    for serial in wanted:
        row = logged.get(serial)
        status = (row or {}).get("operation_status", "").upper()
        substatus = (row or {}).get("operation_substatus", "")
        if status in MOVED:
            verdicts[serial] = Verdict(serial, True, f"assigned to {server.name}", activity)
        elif status in ("FAILED", "FAILURE", "ERROR"):
            if any(word in substatus.upper() for word in NOT_FOUND_WORDS):
                verdicts[serial] = Verdict(serial, False, not_in_organisation(serial, client.account.service), activity)
            else:
                reason = substatus.replace("_", " ").lower() or "no reason given"
                verdicts[serial] = Verdict(
                    serial,
                    False,
                    f"{serial} did not move to {server.name}: {client.account.service}'s log of activity {activity} "
                    f"says it failed ({reason})",
                    activity,
                )
        else:
            found = await where_is(client, serial, server, activity=activity)
            if not found.moved and row is None:
                found = Verdict(serial, False, f"{found.message} (activity {activity} ended {state})", activity)
            verdicts[serial] = found
    return verdicts


async def finished(client: AppleClient, activity: str, poll: float) -> dict[str, Any]:
    """The activity's attributes once it is COMPLETED, FAILED or STOPPED."""
    while True:
        attributes = await client.activity(activity)
        if str(attributes.get("status", "")).upper() in FINISHED:
            return attributes
        await anyio.sleep(poll)


async def where_is(client: AppleClient, serial: str, server: Server, *, activity: str | None = None) -> Verdict:
    """Whether `serial` is on `server` now, read from `relationships/assignedServer`."""
    try:
        current = await client.assigned_server(serial)
    except NotInOrganisation as error:
        return Verdict(serial, False, error.message, activity)
    if current == server.id:
        return Verdict(serial, True, f"assigned to {server.name}", activity)
    return Verdict(
        serial, False, f"{serial} did not move to {server.name}: {await describe(client, current)}", activity
    )


async def describe(client: AppleClient, server_id: str | None) -> str:
    if server_id is None:
        return "it is assigned to no MDM server"
    try:
        names = {s.id: s for s in await client.servers()}
    except AppleError:
        names = {}
    found = names.get(server_id)
    if found is None:
        return f"it is still assigned to the server {server_id}"
    return f'it is still on "{found.name}"' + (" (Apple Configurator's)" if found.configurator else "")
