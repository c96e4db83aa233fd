"""usbmuxd's client protocol (plist version): list, listen for hotplug, connect to device ports, pair records."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from typing import TYPE_CHECKING, Any

from stationd.usbmux import packet

if TYPE_CHECKING:
    from stationd.emulator.emulator import Emulator
    from stationd.emulator.ipad import VirtualDevice

RESULT_OK = 0
RESULT_BADCOMMAND = 1
RESULT_BADDEV = 2
RESULT_CONNREFUSED = 3
RESULT_BADVERSION = 6


def attached_message(device: VirtualDevice) -> dict[str, Any]:
    """The Attached record real usbmuxd sends for a USB device (SerialNumber is the UDID)."""
    return {
        "MessageType": "Attached",
        "DeviceID": device.device_id,
        "Properties": {
            "ConnectionSpeed": 480000000,
            "ConnectionType": "USB",
            "DeviceID": device.device_id,
            "LocationID": device.location_id,
            "ProductID": 0x12AB,
            "SerialNumber": device.udid,
            "USBSerialNumber": device.udid.replace("-", ""),
        },
    }


class UsbmuxClient:
    """One client connection to the emulated usbmuxd."""

    def __init__(self, emulator: Emulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.emulator = emulator
        self.reader = reader
        self.writer = writer
        self.listening = False

    def send(self, tag: int, body: dict[str, Any]) -> None:
        self.writer.write(packet.encode(tag, body))

    def result(self, tag: int, number: int) -> None:
        self.send(tag, {"MessageType": "Result", "Number": number})

    async def serve(self) -> None:
        try:
            while True:
                received = await packet.read(self.reader.readexactly)
                if not received.is_plist:
                    self.writer.write(packet.encode_binary_result(received.tag, RESULT_BADVERSION))
                    await self.writer.drain()
                    continue
                try:
                    request = received.message()
                except packet.PacketError:
                    self.result(received.tag, RESULT_BADCOMMAND)
                    await self.writer.drain()
                    continue
                handed_over = await self.handle(received.tag, request)
                if handed_over:
                    return
                await self.writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, packet.PacketError):
            return
        finally:
            if self.listening:
                self.emulator.listeners.discard(self)
            if not self.writer.is_closing():
                self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def handle(self, tag: int, request: dict[str, Any]) -> bool:
        """Answer one request; True when the connection was handed over to a device port."""
        kind = request.get("MessageType")
        if kind == "ReadBUID":
            self.send(tag, {"BUID": self.emulator.buid})
        elif kind == "ListDevices":
            self.send(tag, {"DeviceList": [attached_message(d) for d in self.emulator.attached_devices()]})
        elif kind == "Listen":
            self.result(tag, RESULT_OK)
            for device in self.emulator.attached_devices():
                self.send(0, attached_message(device))
            self.listening = True
            self.emulator.listeners.add(self)
        elif kind == "Connect":
            return await self.connect(tag, request)
        elif kind == "ReadPairRecord":
            record = self.emulator.pair_records.get(str(request.get("PairRecordID")))
            if record is None:
                self.result(tag, errno.ENOENT)
            else:
                self.send(tag, {"PairRecordData": record})
        elif kind == "SavePairRecord":
            data = request.get("PairRecordData")
            if not request.get("PairRecordID") or not isinstance(data, (bytes, bytearray)):
                self.result(tag, errno.EINVAL)
            else:
                self.emulator.pair_records[str(request["PairRecordID"])] = bytes(data)
                self.result(tag, RESULT_OK)
                self.emulator.notify({"MessageType": "Paired", "DeviceID": request.get("DeviceID", 0)})
        elif kind == "DeletePairRecord":
            removed = self.emulator.pair_records.pop(str(request.get("PairRecordID")), None)
            self.result(tag, RESULT_OK if removed is not None else errno.ENOENT)
        else:
            self.result(tag, RESULT_BADCOMMAND)
        return False

    async def connect(self, tag: int, request: dict[str, Any]) -> bool:
        device = self.emulator.device_by_id(request.get("DeviceID"))
        if device is None:
            self.result(tag, RESULT_BADDEV)
            return False
        port = socket.ntohs(int(request.get("PortNumber", 0)) & 0xFFFF)
        handler = self.emulator.port_handler(device, port)
        if handler is None:
            self.result(tag, RESULT_CONNREFUSED)
            return False
        self.result(tag, RESULT_OK)
        await self.writer.drain()
        await self.emulator.run_device_stream(device, handler, self.reader, self.writer)
        return True
