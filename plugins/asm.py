"""Report finished iPads to Apple School Manager or Apple Business Manager: move each serial to your MDM server.

Devices prepared with Apple Configurator sit on its pseudo-server ("Devices Added by Apple Configurator 2"); the
school's technician then finds each serial and reassigns it to the MDM's server by hand. This reporter does that
for every finished iPad, in batches: the serials gathered over `window` seconds go in one ASSIGN_DEVICES activity
(within `posts_per_hour`, shared by every station on the same database), and each serial is verified from the
activity's log, or where it now sits, before its delivery counts as done. A serial that did not move is a failed
delivery that names it and why.

Settings, under [plugins.asm]:
    product          "school" (Apple School Manager) or "business" (Apple Business Manager)
    client_id        the API account's client id (SCHOOLAPI.… / BUSINESSAPI.…)
    key_id           the API account's key id
    key_file         full path of the account's private key (.pem), readable by the station's user only (0600)
    server           the MDM server's name in Apple School/Business Manager (`stationd asm servers` lists them)
    window           seconds the first finished iPad waits for others to share its activity (default 300)
    batch            at most this many serials per activity (default 1000)
    posts_per_hour   Apple's observed limit of POSTs an hour (default 10); gets_per_minute likewise (default 20)
    poll             seconds between two looks at a running activity (default 60)
    assign_held      true: in DEP mode, assign the serial of an iPad held for want of an assignment (default false)
    recheck          seconds between two looks at held iPads' serials (default 60)
    api_url, token_url   Apple's, unless you test against the emulator's fake API
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx

from stationd.apple.assign import Verdict, assign, where_is
from stationd.apple.client import AppleClient, AppleError, BudgetSpent
from stationd.apple.settings import AsmSettings, read_settings
from stationd.plugins import PluginContext
from stationd.reporting import DeliveryContext, Reporter, ReporterPlugin, Result
from stationd.store import Assignment, Delivery


def make(settings: dict[str, Any], context: PluginContext) -> ReporterPlugin:
    return ReporterPlugin(AsmReporter(read_settings(settings, context.name)))


class AsmReporter(Reporter):
    lease = 4 * 3600.0
    backoff = 300.0

    def __init__(self, settings: AsmSettings) -> None:
        self.settings = settings
        self.batch = settings.batch
        self.window = settings.window
        self._http: httpx.AsyncClient | None = None
        self._client: AppleClient | None = None

    def client(self, context: DeliveryContext) -> AppleClient:
        if self._client is None:
            self._http = httpx.AsyncClient(timeout=self.settings.timeout)
            self._client = self.settings.client(context.outbox, self._http)
        return self._client

    async def deliver(self, deliveries: list[Delivery], context: DeliveryContext) -> dict[str, Result]:
        client = self.client(context)
        results: dict[str, Result] = {}
        try:
            server = await client.server(self.settings.server)
        except AppleError as error:
            return {d.key: trouble(error) for d in deliveries}
        groups: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            if not delivery.serial:
                results[delivery.key] = Result.failed("the iPad's serial number is unknown, so it cannot be assigned")
                continue
            progress = delivery.progress
            label = str(progress.get("activity") or ("posting" if progress.get("posting") else ""))
            groups.setdefault(label, []).append(delivery)
        for group in groups.values():

            async def note(values: dict[str, Any], group: list[Delivery] = group) -> None:
                await context.note(group, **values)
                if values.get("activity"):
                    pending = [
                        Assignment(d.serial or "", "pending", server.name, activity=values["activity"]) for d in group
                    ]
                    await context.outbox.record_assignments(pending)

            serials = [d.serial or "" for d in group]
            try:
                verdicts = await assign(
                    client, serials, server, progress=group[0].progress, note=note, poll=self.settings.poll
                )
            except AppleError as error:
                results.update({d.key: trouble(error) for d in group})
                continue
            await context.outbox.record_assignments(recorded(verdicts.values(), server.name))
            for delivery in group:
                verdict = verdicts[delivery.serial or ""]
                results[delivery.key] = (
                    Result.done(verdict.message, activity=verdict.activity)
                    if verdict.moved
                    else Result.failed(verdict.message)
                )
        return results

    async def background(self, context: DeliveryContext) -> None:
        """Look up the serials of iPads held in DEP mode (and assign them, with `assign_held`)."""
        while True:
            try:
                await self.settle_held(context)
                pause = self.settings.recheck
            except BudgetSpent as error:
                pause = max(self.settings.recheck, error.after or 0.0)
            except AppleError as error:
                context.log.warning("asm.held_check_failed", error=error.message)
                pause = max(self.settings.recheck, 60.0)
            await anyio.sleep(pause)

    async def settle_held(self, context: DeliveryContext) -> None:
        wanted = await context.outbox.get_assignments(status="wanted")
        if not wanted:
            return
        client = self.client(context)
        server = await client.server(self.settings.server)
        missing: list[str] = []
        for serial in wanted:
            verdict = await where_is(client, serial, server)
            if verdict.moved or not self.settings.assign_held or "not in your organisation" in verdict.message:
                await context.outbox.record_assignments(recorded([verdict], server.name, waiting=True))
            else:
                missing.append(serial)
        if missing:

            async def note(values: dict[str, Any]) -> None:
                if values.get("activity"):
                    pending = [Assignment(s, "pending", server.name, activity=values["activity"]) for s in missing]
                    await context.outbox.record_assignments(pending)

            verdicts = await assign(client, missing, server, note=note, poll=self.settings.poll)
            await context.outbox.record_assignments(recorded(verdicts.values(), server.name))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http, self._client = None, None


def recorded(verdicts: Any, server: str, *, waiting: bool = False) -> list[Assignment]:
    """Verdicts as the store keeps them; a held iPad's serial not moved yet stays wanted (its message says why)."""
    found = []
    for verdict in verdicts:
        assert isinstance(verdict, Verdict)
        status = (
            "assigned"
            if verdict.moved
            else ("wanted" if waiting and "not in your" not in verdict.message else "failed")
        )
        found.append(Assignment(verdict.serial, status, server, verdict.message, verdict.activity))
    return found


def trouble(error: AppleError) -> Result:
    if isinstance(error, BudgetSpent):
        return Result.defer(error.message, error.after or 60.0)
    if error.transient:
        return Result.retry(error.message, error.after)
    return Result.failed(error.message)
