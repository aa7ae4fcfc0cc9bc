"""A throwaway PostgreSQL cluster for tests: initdb in a temporary folder, a free port on
127.0.0.1, trust authentication for local connections only, stopped and deleted afterwards.

The server binaries come from Debian's ``postgresql`` package (/usr/lib/postgresql/<ver>/bin),
from $REFERRAL_ML_PG_BINDIR, or from PATH. initdb and postgres refuse to run as root: as root
they run as the ``postgres`` OS user (which the Debian package creates) through ``runuser``,
with the cluster's folder owned by that user.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.integration.servers import free_port, tail

BINDIR_ENV = "REFERRAL_ML_PG_BINDIR"
OS_USER = "postgres"  # the server's OS user when the tests run as root
SUPERUSER = "postgres"  # the cluster's superuser role (initdb -U)
COMMAND_TIMEOUT_S = 120.0
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
PORT_ATTEMPTS = 3

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",  # a throwaway cluster: durability is not wanted, speed is
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "'64MB'",
    "logging_collector": "off",
}
HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"


class PostgresError(RuntimeError):
    """The cluster could not be created, started or stopped (the message holds the log tail)."""


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None: $REFERRAL_ML_PG_BINDIR when set
    (and only it), else the newest Debian version, else PATH."""
    override = os.environ.get(BINDIR_ENV)
    if override:
        candidates = [Path(override)]
    else:

        def version(path: Path) -> tuple[int, ...]:
            return tuple(int(x) for x in re.findall(r"\d+", path.parent.name))

        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if all((bindir / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


@dataclass
class Cluster:
    """A running throwaway cluster; `url(db)` is a SQLAlchemy URL for one of its databases."""

    bindir: Path
    root: Path
    port: int = 0
    as_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def sockets(self) -> Path:
        return self.root / "sockets"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", OS_USER, "--", *cmd]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root
            )
        except subprocess.TimeoutExpired:
            raise PostgresError(
                f"{args[0]} did not finish within {timeout:.0f} s; server log:\n{tail(self.log)}"
            ) from None
        if done.returncode != 0:
            raise PostgresError(
                f"{' '.join(args[:2])} exited with {done.returncode}:\n"
                f"{(done.stdout + done.stderr)[-2000:]}\nserver log:\n{tail(self.log)}"
            )

    def init(self) -> None:
        """initdb (UTF-8, ICU en-US collation; trust only from the local socket and 127.0.0.1)."""
        for folder in (self.data, self.sockets):
            folder.mkdir(mode=0o700)
        if self.as_root:
            shutil.chown(self.root, OS_USER)
            for folder in (self.data, self.sockets):
                shutil.chown(folder, OS_USER)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            # A linguistic default collation, as on most real servers (en_US.UTF-8): the store
            # must not depend on byte-wise string order being the server's default.
            "--locale-provider=icu",
            "--icu-locale=en-US",
            "--no-sync",
        )
        (self.data / "pg_hba.conf").write_text(HBA)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/integration/postgres.py\n")
            conf.write(f"unix_socket_directories = '{self.sockets}'\n")
            conf.writelines(f"{k} = {v}\n" for k, v in SETTINGS.items())

    def start(self) -> None:
        """Run the postmaster as a child of this process (pg_ctl start would leave it to PID 1,
        which in some containers never reaps it) on a free port, and wait until it accepts
        connections; another port when the chosen one was taken in the meantime."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.port = free_port()
            cmd = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
            if self.as_root:
                cmd = ["runuser", "-u", OS_USER, "--", *cmd]
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    cmd, cwd=self.root, stdout=log, stderr=log, start_new_session=True
                )
            deadline = time.monotonic() + START_TIMEOUT_S
            while self.proc.poll() is None and not self._accepts():
                if time.monotonic() > deadline:
                    self.stop()
                    raise PostgresError(
                        f"PostgreSQL did not accept connections within {START_TIMEOUT_S} s; "
                        f"server log:\n{tail(self.log)}"
                    )
                time.sleep(0.1)
            if self.proc.poll() is None:
                return
            if attempt < PORT_ATTEMPTS and "already in use" in tail(self.log).lower():
                continue
            raise PostgresError(
                f"postgres exited with {self.proc.returncode}; server log:\n{tail(self.log)}"
            )

    def _accepts(self) -> bool:
        try:
            with _connect(self.url("postgres")):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        """pg_ctl stop -m fast, then reap the postmaster; it is killed if that fails."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self._run(
                "pg_ctl",
                "stop",
                "-D",
                str(self.data),
                "-m",
                "fast",
                "-w",
                "-t",
                str(STOP_TIMEOUT_S),
                timeout=STOP_TIMEOUT_S + 15,
            )
        finally:
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: postgres and runuser
                self.proc.wait(timeout=STOP_TIMEOUT_S)
                raise PostgresError(
                    f"PostgreSQL did not stop within {STOP_TIMEOUT_S} s; killed; "
                    f"server log:\n{tail(self.log)}"
                ) from None


def _connect(url: str) -> psycopg.Connection[Any]:
    u = make_url(url)
    return psycopg.connect(
        host=u.host,
        port=u.port,
        user=u.username,
        dbname=u.database,
        autocommit=True,
        connect_timeout=5,
    )


def create_database(url: str, name: str) -> str:
    """Create the database `name` (afresh: an older one is dropped) on the server of `url`, a
    SQLAlchemy URL of another of its databases; returns the new database's URL."""
    server = make_url(url)
    with _connect(server.set(database="postgres").render_as_string(hide_password=False)) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server.set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def running_cluster(bindir: Path, database: str = "referral") -> Iterator[Cluster]:
    """Start a throwaway cluster with one database; yield it; stop and delete it. Raises
    PostgresError (with the server log's tail) when any step fails."""
    root = Path(tempfile.mkdtemp(prefix="referral-pg-"))  # not under pytest's 0700 tmp folder
    cluster = Cluster(bindir, root)
    try:
        cluster.init()
        cluster.start()
        try:
            create_database(cluster.url("postgres"), database)
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
