"""Where usbmuxd listens: a UNIX socket path or a TCP host:port, spelled the way each client wants it."""

from __future__ import annotations

import os

ENV_VAR = "USBMUXD_SOCKET_ADDRESS"
DEFAULT_SOCKET = "/var/run/usbmuxd"


def parse_usbmux_address(address: str) -> tuple[str, object]:
    """Read '/path', 'UNIX:/path' or 'host:port' as ("unix", path) or ("tcp", (host, port))."""
    if address[:5].upper() == "UNIX:":
        return "unix", address[5:]
    if address.startswith("/") or ":" not in address:
        return "unix", address
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"usbmuxd address {address!r} is neither a socket path nor HOST:PORT")
    return "tcp", (host, int(port))


def resolve_usbmux_address(override: str | None = None) -> tuple[str, object]:
    """The override, else $USBMUXD_SOCKET_ADDRESS, else /var/run/usbmuxd; parsed by `parse_usbmux_address`."""
    return parse_usbmux_address(override or os.environ.get(ENV_VAR) or DEFAULT_SOCKET)


def pymobiledevice3_address(override: str | None = None) -> str:
    """The same address in pymobiledevice3's spelling: a bare socket path or host:port."""
    kind, target = resolve_usbmux_address(override)
    if kind == "unix":
        return str(target)
    host, port = target  # type: ignore[misc]
    return f"{host}:{port}"
