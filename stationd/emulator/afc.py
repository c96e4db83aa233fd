"""com.apple.afc on the device: the Apple File Connection protocol over the iPad's in-memory Media tree.

Packets: a 40-byte little-endian header (magic "CFA6LPAA", entire length, this length, packet number, opcode) and a
payload; the device answers each packet with the same packet number: STATUS (a u64 error code), DATA, FILE_OPEN_RES
(a u64 handle) or FILE_TELL_RES (a u64 position). Enough of it for an app upload to PublicStaging and a look around.
"""

from __future__ import annotations

import struct
from typing import Any

from stationd.emulator.media import MediaError, Node
from stationd.emulator.service import DeviceConnection

MAGIC = b"CFA6LPAA"
HEADER = struct.Struct("<8sQQQQ")
U64 = struct.Struct("<Q")
MAX_PACKET = HEADER.size + 8 + 8 * 1024 * 1024  # a write of up to 8 MiB (pymobiledevice3 writes 4 MiB at a time)
MAX_DISCARD = HEADER.size + 8 + (1 << 30)  # a larger packet is read and refused, up to the 1 GiB clients send
MAX_READ = 8 * 1024 * 1024
MAX_HANDLES = 64

# Opcodes
STATUS, DATA, READ_DIR, REMOVE_PATH, MAKE_DIR, GET_FILE_INFO, GET_DEVINFO = 0x01, 0x02, 0x03, 0x08, 0x09, 0x0A, 0x0B
FILE_OPEN, FILE_OPEN_RES, READ, WRITE, FILE_SEEK, FILE_TELL, FILE_TELL_RES = 0x0D, 0x0E, 0x0F, 0x10, 0x11, 0x12, 0x13
FILE_CLOSE, FILE_SET_SIZE, RENAME_PATH, FILE_LOCK = 0x14, 0x15, 0x18, 0x1B
NAMES = {
    READ_DIR: "ReadDir",
    REMOVE_PATH: "RemovePath",
    MAKE_DIR: "MakeDir",
    GET_FILE_INFO: "GetFileInfo",
    GET_DEVINFO: "GetDeviceInfo",
    FILE_OPEN: "FileRefOpen",
    READ: "FileRefRead",
    WRITE: "FileRefWrite",
    FILE_SEEK: "FileRefSeek",
    FILE_TELL: "FileRefTell",
    FILE_CLOSE: "FileRefClose",
    FILE_SET_SIZE: "FileRefSetFileSize",
    RENAME_PATH: "RenamePath",
    FILE_LOCK: "FileRefLock",
}

# Status codes. A real iPad answers "unknown error" when asked to remove a directory that is not empty.
ERRORS = {
    "SUCCESS": 0,
    "UNKNOWN_ERROR": 1,
    "OP_HEADER_INVALID": 2,
    "NO_RESOURCES": 3,
    "UNKNOWN_PACKET_TYPE": 6,
    "INVALID_ARG": 7,
    "OBJECT_NOT_FOUND": 8,
    "OBJECT_IS_DIR": 9,
    "PERM_DENIED": 10,
    "TOO_MUCH_DATA": 13,
    "END_OF_DATA": 14,
    "OBJECT_EXISTS": 16,
    "NO_SPACE_LEFT": 18,
    "DIR_NOT_EMPTY": 1,
}

# FILE_OPEN modes: (readable, writable, create, truncate, append)
MODES = {
    1: (True, False, False, False, False),  # r
    2: (True, True, True, False, False),  # r+
    3: (False, True, True, True, False),  # w
    4: (True, True, True, True, False),  # w+
    5: (False, True, True, False, True),  # a
    6: (True, True, True, False, True),  # a+
}


class Refused(Exception):
    """Answer the packet with this status."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class OpenFile:
    def __init__(self, node: Node, mode: tuple[bool, bool, bool, bool, bool]) -> None:
        self.node = node
        self.readable, self.writable, _, _, self.append = mode
        self.position = 0


def _cstrings(payload: bytes, count: int) -> list[str]:
    parts = payload.split(b"\x00")
    if len(parts) <= count:
        raise Refused("INVALID_ARG")
    try:
        return [part.decode() for part in parts[:count]]
    except UnicodeDecodeError:
        raise Refused("INVALID_ARG") from None


def _u64s(payload: bytes, count: int) -> tuple[int, ...]:
    if len(payload) < 8 * count:
        raise Refused("INVALID_ARG")
    return struct.unpack_from(f"<{count}Q", payload)


class AFCConnection(DeviceConnection):
    """One host connection to AFC: its open files; the tree belongs to the device."""

    channel = "afc"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.files: dict[int, OpenFile] = {}
        self.next_handle = 1

    async def serve(self) -> None:
        while True:
            header = await self.reader.readexactly(HEADER.size)
            magic, entire, this, number, opcode = HEADER.unpack(header)
            if magic != MAGIC or entire < HEADER.size or not HEADER.size <= this <= entire:
                self.device.log(self.channel, f"0x{opcode:x}", "closed:invalid header")
                return
            name = NAMES.get(opcode, f"0x{opcode:x}")
            if entire > MAX_PACKET:
                if entire > MAX_DISCARD:
                    self.device.log(self.channel, name, f"closed:packet of {entire} bytes")
                    return
                await self._discard(entire - HEADER.size)
                self.device.log(self.channel, name, "TOO_MUCH_DATA")
                await self._send(number, STATUS, U64.pack(ERRORS["TOO_MUCH_DATA"]))
                continue
            payload = await self.reader.readexactly(entire - HEADER.size)
            try:
                kind, answer = self.handle(opcode, payload)
                outcome = "ok"
            except Refused as refused:
                kind, answer, outcome = STATUS, U64.pack(ERRORS[refused.code]), refused.code
            except MediaError as error:
                kind, answer, outcome = STATUS, U64.pack(ERRORS[error.code]), error.code
            if opcode not in (READ, WRITE):  # an upload is hundreds of writes: keep the request log readable
                self.device.log(self.channel, name, outcome)
            await self._send(number, kind, answer)

    async def _discard(self, length: int) -> None:
        while length:
            chunk = await self.reader.readexactly(min(length, 1 << 16))
            length -= len(chunk)

    async def _send(self, number: int, kind: int, payload: bytes) -> None:
        length = HEADER.size + len(payload)
        self.writer.write(HEADER.pack(MAGIC, length, length, number, kind) + payload)
        await self.writer.drain()

    def _file(self, handle: int) -> OpenFile:
        if handle not in self.files:
            raise Refused("INVALID_ARG")
        return self.files[handle]

    def handle(self, opcode: int, payload: bytes) -> tuple[int, bytes]:
        """Do one operation; return the answer's opcode and payload (Refused or MediaError for a status)."""
        contents = self.device.contents
        media = contents.media
        if opcode == READ_DIR:
            (path,) = _cstrings(payload, 1)
            return DATA, b"".join(name.encode() + b"\x00" for name in [".", "..", *media.list(path)])
        if opcode == GET_FILE_INFO:
            (path,) = _cstrings(payload, 1)
            return DATA, _key_values(media.info(path))
        if opcode == GET_DEVINFO:
            total = contents.storage.spec.data_capacity
            return DATA, _key_values(
                {
                    "Model": self.device.spec.product_type,
                    "FSTotalBytes": str(total),
                    "FSFreeBytes": str(contents.free_bytes()),
                    "FSBlockSize": "4096",
                }
            )
        if opcode == MAKE_DIR:
            media.make_directories(_cstrings(payload, 1)[0])
        elif opcode == REMOVE_PATH:
            media.remove(_cstrings(payload, 1)[0])
        elif opcode == RENAME_PATH:
            media.rename(*_cstrings(payload, 2))
        elif opcode == FILE_OPEN:
            (mode,) = _u64s(payload, 1)
            (path,) = _cstrings(payload[8:], 1)
            if mode not in MODES:
                raise Refused("INVALID_ARG")
            if len(self.files) >= MAX_HANDLES:
                raise Refused("NO_RESOURCES")
            _, writable, create, truncate, _ = MODES[mode]
            node = media.open_file(path, create, truncate) if writable else media.open_file(path, False, False)
            handle, self.next_handle = self.next_handle, self.next_handle + 1
            self.files[handle] = OpenFile(node, MODES[mode])
            return FILE_OPEN_RES, U64.pack(handle)
        elif opcode == READ:
            handle, size = _u64s(payload, 2)
            opened = self._file(handle)
            if not opened.readable:
                raise Refused("PERM_DENIED")
            data = bytes(opened.node.data[opened.position : opened.position + min(size, MAX_READ)])
            opened.position += len(data)
            return DATA, data
        elif opcode == WRITE:
            (handle,) = _u64s(payload, 1)
            opened = self._file(handle)
            if not opened.writable:
                raise Refused("PERM_DENIED")
            if opened.append:
                opened.position = len(opened.node.data)
            media.write(opened.node, opened.position, payload[8:], room=contents.free_bytes())
            opened.position += len(payload) - 8
        elif opcode == FILE_SEEK:
            handle, whence, offset = _u64s(payload, 3)
            opened = self._file(handle)
            offset = offset - (1 << 64) if offset >= 1 << 63 else offset
            base = {0: 0, 1: opened.position, 2: len(opened.node.data)}.get(whence)
            if base is None or base + offset < 0:
                raise Refused("INVALID_ARG")
            opened.position = base + offset
        elif opcode == FILE_TELL:
            return FILE_TELL_RES, U64.pack(self._file(_u64s(payload, 1)[0]).position)
        elif opcode == FILE_SET_SIZE:
            handle, size = _u64s(payload, 2)
            opened = self._file(handle)
            if not opened.writable:
                raise Refused("PERM_DENIED")
            media.resize(opened.node, size, room=contents.free_bytes())
        elif opcode == FILE_CLOSE:
            (handle,) = _u64s(payload, 1)
            self._file(handle)
            del self.files[handle]
        elif opcode == FILE_LOCK:
            self._file(_u64s(payload, 1)[0])
        else:
            raise Refused("UNKNOWN_PACKET_TYPE")
        return STATUS, U64.pack(ERRORS["SUCCESS"])


def _key_values(values: dict[str, str]) -> bytes:
    return b"".join(k.encode() + b"\x00" + v.encode() + b"\x00" for k, v in values.items())
