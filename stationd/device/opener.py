"""Opens paired sessions to iPads, and asks an iPad whether it still holds a pairing: what the pipeline needs of
the device layer, with the station's usbmuxd, pair-record folder and supervision identity bound in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stationd.device.session import DeviceSession, SupervisorIdentity, pairing_known
from stationd.usbmux import UsbmuxAddress


@dataclass(frozen=True)
class SessionOpener:
    usbmux: UsbmuxAddress
    pair_records: Path
    identity: SupervisorIdentity | None

    def open(self, udid: str, device_id: int | None = None) -> DeviceSession:
        return DeviceSession(
            udid,
            usbmux_address=self.usbmux,
            pair_records=self.pair_records,
            identity=self.identity,
            device_id=device_id,
        )

    async def pairing_known(self, udid: str, pairing: dict[str, str], device_id: int | None = None) -> bool:
        return await pairing_known(udid, pairing, usbmux_address=self.usbmux, device_id=device_id)

    @property
    def certificate_der(self) -> bytes:
        """Our supervision certificate (DER), or b"" without an identity (supervising then fails clearly)."""
        return self.identity.certificate_der if self.identity is not None else b""
