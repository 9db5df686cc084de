"""A PostgreSQL cluster of a test's own (`initdb`/`pg_ctl` from Debian's PostgreSQL, on a free
port, fsync off), so that a test can stop and restart a real server without touching the shared
one. `cluster` is the fixture; under CI=true missing binaries are a failure, not a skip."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.conftest import IN_CI


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A PostgreSQL cluster of the test's own: data directory, port, `pg_ctl` as its owner."""

    bin: Path
    root: Path
    port: int
    owner: str | None  # the user the server runs as (None: the current user, not root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def run(self, *argv: str, timeout: float = 60) -> None:
        cmd = list(argv)
        if self.owner is not None:
            cmd = ["runuser", "-u", self.owner, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        assert done.returncode == 0, (cmd, done.stdout, done.stderr)

    def pg_ctl(self, *args: str) -> None:
        self.run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "30",
            *args,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self.pg_ctl("-o", opts, "start")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    bin_dir = _pg_bin()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        msg = "Debian's PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb, pg_ctl) are not installed"
        if IN_CI:
            pytest.fail(msg + " (CI=true: a missing binary is a failure)", pytrace=False)
        pytest.skip(msg)
    owner: str | None = None
    root = Path(tempfile.mkdtemp(prefix="vitte-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        owner = "postgres"
        try:
            entry = pwd.getpwnam(owner)
        except KeyError:
            shutil.rmtree(root)
            pytest.fail("running as root without a 'postgres' user to run PostgreSQL as", pytrace=False)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    c = Cluster(bin_dir, root, _free_port(), owner)
    try:
        c.run(str(bin_dir / "initdb"), "-D", str(c.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        c.start()
        yield c
    finally:
        with contextlib.suppress(Exception):
            c.pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def create_database(c: Cluster, name: str = "vitte") -> str:
    """A new database in the cluster: its SQLAlchemy URL."""
    with psycopg.connect(f"host=127.0.0.1 port={c.port} user=postgres dbname=postgres", autocommit=True) as a:
        a.execute(f'CREATE DATABASE "{name}"')
    return c.url(name)
