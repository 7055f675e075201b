"""A throw-away PostgreSQL cluster for tests: Debian's binaries, 127.0.0.1, a temp dir, fsync off.

One cluster per test process (started on first use, ~1 s), one fresh database per test,
copied from a template that `edge-bureau migrate` already brought up to date. initdb refuses
to run as root: as root the cluster runs as the `postgres` user (the Debian package makes it).
Locally, without the binaries, the tests skip; under CI (CI=true) they fail instead.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from edge_agent.loopback import free_port


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class Cluster:
    def __init__(self, durable: bool = False) -> None:
        bin_dir = pg_bin()
        if bin_dir is None:
            if os.environ.get("CI"):
                raise RuntimeError("PostgreSQL binaries missing in CI: .ci/system-packages.sh installs postgresql")
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="bureau-pg-"))
        self.port = free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "bureau", "-E", "UTF8",
                  "--no-instructions", *([] if durable else ["--no-sync"]))
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
                "-c max_connections=200")
        if not durable:  # tests: nothing to keep, so no waiting for the disk (the bench keeps the defaults)
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._opts = opts
        self.resume()
        self._n = itertools.count(1)
        self.template = "bureau_template"
        self._admin(f"CREATE DATABASE {self.template}")
        from bureau.store.postgres import migrate

        migrate(self.dsn(self.template))

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.prefix, str(self.bin / tool), *args], check=True, capture_output=True, cwd=self.dir)

    def dsn(self, db: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=bureau dbname={db} connect_timeout=5"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql)

    def fresh(self, migrated: bool = True) -> str:
        """A new database (migrated, or empty); its DSN."""
        name = f"bureau_{next(self._n)}"
        self._admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {self.template}" if migrated else ""))
        return self.dsn(name)

    def pause(self) -> None:
        """Stop the server, keeping its data (a database outage)."""
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-o", self._opts, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


_cluster: Cluster | None = None


def cluster() -> Cluster:
    """This test process's cluster, started on first use and stopped when the process exits."""
    global _cluster
    if _cluster is None:
        _cluster = Cluster()
        atexit.register(_cluster.stop)
    return _cluster
