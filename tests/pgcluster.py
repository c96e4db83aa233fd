"""A throw-away PostgreSQL cluster for the tests and benches: initdb and pg_ctl in a temporary folder, listening on
a free loopback port and on a socket in that folder, stopped (and removed) at the end.

PostgreSQL refuses to run as root, so when the suite runs as root (CI does) the cluster runs as the `postgres` user
(Debian's package creates it), through runuser.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

USER = "stationd"  # the cluster's superuser (trust authentication on loopback only)
MISSING = (
    "PostgreSQL's server programs (initdb, pg_ctl) are missing: `bash tools/test.sh` installs Debian's postgresql "
    "package when run as root, or: sudo apt-get install postgresql"
)


def binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        if (Path(folder) / "initdb").exists():
            return Path(folder)
    return None


def _version(folder: str) -> float:
    try:
        return float(Path(folder).parent.name)
    except ValueError:
        return 0.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    """One running cluster; `url(database)` reaches it over TCP on 127.0.0.1."""

    def __init__(self, folder: Path, bin_dir: Path, port: int, settings: dict[str, str]) -> None:
        self.folder = folder
        self.bin = bin_dir
        self.port = port
        self.data = folder / "data"
        self.settings = settings
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
        self._databases = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        result = subprocess.run([*self._as, *command], capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:2])} failed: {result.stderr.strip() or result.stdout.strip()}")

    def init(self) -> None:
        if self._as:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = [f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder}"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        log = self.folder / "server.log"
        pg_ctl = str(self.bin / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-o", " ".join(options), "-l", str(log), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """Stop the server (every connection drops) and start it again on the same port."""
        self.stop("immediate")
        self.start()

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        self._databases += 1
        name = f"test_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@contextmanager
def cluster(**settings: str) -> Iterator[Cluster]:
    """A running throw-away cluster; stopped and removed when the block ends, whatever happens."""
    bin_dir = binaries()
    if bin_dir is None:
        raise FileNotFoundError(MISSING)
    folder = Path(tempfile.mkdtemp(prefix="stationd-pg-"))
    defaults = {"fsync": "off", "full_page_writes": "off", "max_connections": "200", "log_min_messages": "warning"}
    try:
        for attempt in range(3):
            running = Cluster(folder, bin_dir, free_port(), {**defaults, **settings})
            if attempt == 0:
                running.init()
            try:
                running.start()
            except RuntimeError:
                if attempt == 2:
                    raise
                continue
            break
        try:
            yield running
        finally:
            running.stop("immediate")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
