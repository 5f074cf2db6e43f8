"""A private PostgreSQL server for fault tests: started, stopped and restarted at will.

The shared server at 127.0.0.1:5432 serves every engineer and CI, so a test that restarts a
database starts its own: ``initdb`` into a temporary folder and ``pg_ctl`` on a free loopback
port, with the socket in that folder. Run as root, the server runs as the ``postgres`` user
(PostgreSQL refuses root), the folder owned by it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

#: Seconds ``pg_ctl`` waits for the server to start or stop.
PG_CTL_WAIT_S = 120


def _bin(name: str) -> str:
    """Path of a PostgreSQL server program (newest installed version)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    path = found[-1] if found else shutil.which(name)
    if not path:
        raise FileNotFoundError(f"PostgreSQL's {name} must be installed. Got none on this host.")
    return path


def free_port() -> int:
    """A loopback TCP port free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    """One throw-away PostgreSQL server (trust authentication, database ``postgres``).

    Attributes:
        folder: The temporary folder: data in ``data/``, the log in ``server.log``.
        port: Its loopback port.
    """

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="pathray-pg-"))
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        initdb = [_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
        self._run(*initdb, "-E", "UTF8", "--no-sync")

    @property
    def data(self) -> Path:
        """The data folder."""
        return self.folder / "data"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of its ``postgres`` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        command = ["runuser", "-u", "postgres", "--", *argv] if self._as_postgres else list(argv)
        done = subprocess.run(command, capture_output=True, text=True, timeout=PG_CTL_WAIT_S + 30)
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {done.stderr or done.stdout}")

    def _pg_ctl(self, *args: str) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), *args)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=50"
        )
        log = str(self.folder / "server.log")
        self._pg_ctl("-o", options, "-l", log, "-w", "-t", str(PG_CTL_WAIT_S), "start")

    def stop(self) -> None:
        """Stop the server the way an operator's restart does (``-m fast``: sessions cut)."""
        self._pg_ctl("-m", "fast", "-w", "-t", str(PG_CTL_WAIT_S), "stop")

    def running(self) -> bool:
        """Whether the server's postmaster is up."""
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        """Stop the server if it runs and delete its folder."""
        try:
            if self.running():
                self._pg_ctl("-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
