"""Where usbmuxd listens, in the three spellings clients use, and in the one pymobiledevice3 takes.

`/path` (pymobiledevice3, usbmuxd's default), `UNIX:/path` (libusbmuxd, libimobiledevice's C tools) and
`host:port` or `[v6]:port` (a TCP listener). Everything in the station that needs the address reads it here.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "USBMUXD_SOCKET_ADDRESS"
DEFAULT_SOCKET = "/var/run/usbmuxd"


class AddressError(ValueError):
    """An address that is neither a socket path nor HOST:PORT, or one pymobiledevice3 cannot reach."""


@dataclass(frozen=True)
class UsbmuxAddress:
    """A UNIX socket `path`, or a TCP `host` and `port`."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        host = f"[{self.host}]" if ":" in (self.host or "") else self.host
        return f"{host}:{self.port}"

    def for_libusbmuxd(self) -> str:
        """The spelling for USBMUXD_SOCKET_ADDRESS read by libusbmuxd (it takes a bare path as "unset")."""
        return f"UNIX:{self.path}" if self.path is not None else str(self)

    def for_pymobiledevice3(self) -> str:
        """The spelling pymobiledevice3's `usbmux_address` accepts.

        It splits on ":" and connects over IPv4 (`MuxConnection._resolve_usbmux_address`): a socket path must not
        contain ":" (such a path is reached through a colon-free link to it) and IPv6 is not possible."""
        if self.path is not None:
            return self.path if ":" not in self.path else _colon_free_link(self.path)
        if ":" in (self.host or ""):
            raise AddressError(
                f"pymobiledevice3 reaches usbmuxd over IPv4 only, so {self} cannot be used: give an IPv4 address "
                "or a host name that resolves to one, or a socket path"
            )
        return f"{self.host}:{self.port}"


def parse(text: str) -> UsbmuxAddress:
    """Read '/path', 'UNIX:/path', 'host:port' or '[v6]:port' (socket paths are absolute)."""
    path = text[5:] if text[:5].upper() == "UNIX:" else text
    if path.startswith("/"):
        return UsbmuxAddress(path=path)
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            host = ""
    elif ":" in host:
        host = ""
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AddressError(f"usbmuxd address {text!r} is neither a socket path nor HOST:PORT")
    return UsbmuxAddress(host=host, port=int(port))


def resolve(override: str | None = None) -> UsbmuxAddress:
    """The override, else $USBMUXD_SOCKET_ADDRESS, else /var/run/usbmuxd."""
    return parse(override or os.environ.get(ENV_VAR) or DEFAULT_SOCKET)


@functools.cache
def _colon_free_link(path: str) -> str:
    """A symbolic link to `path` whose own path has no ":", in a private folder (made once per target)."""
    folder = Path(tempfile.gettempdir()) / f"stationd-usbmux-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        raise AddressError(f"{folder} is not private to this user: remove it, or use a socket path without ':'")
    link = folder / hashlib.sha256(path.encode()).hexdigest()[:16]
    if not (link.is_symlink() and os.readlink(link) == path):
        link.unlink(missing_ok=True)
        link.symlink_to(path)
    if ":" in str(link):
        raise AddressError(f"the socket path {path} contains ':', which pymobiledevice3 cannot read")
    return str(link)
