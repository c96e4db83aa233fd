"""A station on virtual iPads, in one event loop: emulator, fake MDM, fake activation server, store, daemon."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio

from stationd.assemble import assemble
from stationd.config import (
    ActivationConfig,
    ApiConfig,
    Config,
    EnrollmentConfig,
    OrganizationConfig,
    ProfilesConfig,
    StationConfig,
    StepsConfig,
    TimeoutsConfig,
    WifiConfig,
)
from stationd.emulator import Emulator
from stationd.emulator.mdm_server import mdm_app
from stationd.events import Event, EventBus
from stationd.httpserve import HTTPServer
from stationd.identity import Identity, create_identity
from stationd.station import Station

ORG = "Rig School"
FINAL = {"device.done", "step.failed"}


def rig_config(tmp: Path, identity: Identity, emulator: Emulator, mdm_url: str, **sections: Any) -> Config:
    config = Config(
        organization=OrganizationConfig(name=ORG, identity=identity.path),
        station=StationConfig(id="rig", database=tmp / "stationd.db", concurrency=16, pair_records=tmp / "pairs"),
        wifi=WifiConfig(ssid="RigNet", security="WPA2", password="rig-password"),
        enrollment=EnrollmentConfig(mode="url", url=f"{mdm_url}/enroll"),
        activation=ActivationConfig(url=emulator.activation_url or ""),
        timeouts=TimeoutsConfig(retries=3, erase_start=0.5),
        steps=StepsConfig(),
        profiles=ProfilesConfig(),
        api=ApiConfig(listen=None),
    )
    return dataclasses.replace(config, **sections)


@dataclasses.dataclass
class Rig:
    tmp: Path
    emulator: Emulator
    identity: Identity
    mdm: HTTPServer
    config: Config

    @property
    def mdm_url(self) -> str:
        return self.mdm.url

    def device(self, udid: str) -> dict[str, Any]:
        return self.emulator.devices[udid].snapshot()

    @contextlib.asynccontextmanager
    async def station(self, bus: EventBus | None = None, **sections: Any) -> AsyncIterator[Station]:
        config = dataclasses.replace(self.config, **sections) if sections else self.config
        async with assemble(
            config,
            self.identity,
            usbmux_address=self.emulator.usbmux_address,
            backoff=(0.01, 0.05),
            plugins=False,
            bus=bus,
        ) as assembly:
            yield assembly.station

    async def run_until_settled(
        self,
        udids: list[str],
        on_event: Callable[[Event], Any] | None = None,
        timeout: float = 60,
        **sections: Any,
    ) -> dict[str, Event]:
        """Run a station until every listed device is done or failed, or `on_event` returns True."""
        finals: dict[str, Event] = {}
        bus = EventBus()
        with bus.subscribe() as events:
            async with self.station(bus, **sections):
                with anyio.fail_after(timeout):
                    async for event in events:
                        if on_event is not None and on_event(event):
                            break
                        if event.kind in FINAL and event.udid in udids:
                            finals[event.udid] = event
                        if len(finals) == len(udids):
                            break
        return finals


@contextlib.asynccontextmanager
async def make_rig(tmp: Path, specs: list[Any], speed: float = 0.0005) -> AsyncIterator[Rig]:
    identity = create_identity(tmp / "identity.pem", ORG)
    mdm = HTTPServer(mdm_app(ORG))
    await mdm.start()
    try:
        async with Emulator(specs, socket_path=tmp / "usbmuxd", speed=speed) as emulator:
            yield Rig(tmp, emulator, identity, mdm, rig_config(tmp, identity, emulator, mdm.url))
    finally:
        await mdm.stop()


def provisioning_problems(rig: Rig, udid: str, *, mode: str = "url", extra: tuple[str, ...] = ()) -> list[str]:
    """What the iPad itself (the emulator's state) says is missing from a full provisioning; [] when complete."""
    state = rig.device(udid)
    ours = hashlib.sha256(rig.identity.certificate_der).hexdigest()
    cloud = state["cloud_configuration"] or {}
    payloads = {t for types in state["profile_payload_types"].values() for t in types}
    problems = []
    if state["erase_count"] != 1:
        problems.append(f"erased {state['erase_count']} times")
    if state["activation_state"] != "Activated":
        problems.append(f"activation state {state['activation_state']}")
    if (
        not state["supervised"]
        or state["organization"] != ORG
        or ours not in cloud.get("SupervisorHostCertificates", [])
    ):
        problems.append(
            f"supervision {state['organization']!r}, ours listed: {ours in cloud.get('SupervisorHostCertificates', [])}"
        )
    if "com.apple.wifi.managed" not in payloads:
        problems.append("no Wi-Fi profile")
    problems += [f"profile {name} missing" for name in extra if name not in state["profiles"]]
    if mode == "url" and not (state["stored_profile"] and "com.apple.mdm" in state["stored_profile"]["PayloadTypes"]):
        problems.append("no enrollment profile stored")
    if state["device_name"] != f"{ORG}-{state['serial']}":
        problems.append(f"named {state['device_name']!r}")
    return problems
