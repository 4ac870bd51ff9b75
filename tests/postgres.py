"""A real PostgreSQL server for the tests: Debian's binaries (``/usr/lib/postgresql/<v>/bin``) run on a
temporary data folder, listening on a free loopback port (the unix socket in the same folder), always
stopped at the end. PostgreSQL refuses to run as root, so under uid 0 ``initdb`` / ``pg_ctl`` run as the
``postgres`` system user (``runuser``) on a folder it owns. Missing binaries FAIL the test (``.ci/run``
installs them), they never skip it.

    with postgres_server(tmp_path) as server:
        url = server.create_database("speech_hands")   # postgresql://speech_hands@127.0.0.1:PORT/speech_hands
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from loopback import free_port

USER = "speech_hands"
PASSWORD = "s3cret-pg-password"  # a real password (md5/scram auth on TCP), so the tests can check it is never shown


def postgres_bin() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb`` (fails the test without one)."""
    import pytest

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        pytest.fail("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql")
    return Path(found[-1]).parent


@dataclass
class PostgresServer:
    bin: Path
    data: Path
    port: int
    as_user: list[str]

    def url(self, database: str = "postgres", *, password: str | None = PASSWORD) -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` through psql over the unix socket as the superuser (no password needed there)."""
        connect = ["-h", str(self.data), "-p", str(self.port), "-d", database, "-U", "postgres"]
        done = subprocess.run(
            [*self.as_user, str(self.bin / "psql"), *connect, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def restart(self) -> None:
        """Stop the server (fast: open connections are cut) and start it again on the same port."""
        log = str(self.data.parent / "postgres.log")  # never the captured stdout: the server would hold it open
        _run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", log, "-m", "fast", "-w", "restart"])

    def create_database(self, name: str) -> str:
        """A new database owned by the test user; its URL (with the password)."""
        self.psql(f'CREATE DATABASE "{name}" OWNER {USER}')
        return self.url(name)


def _run(command: list[str], **kwargs) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """initdb a fresh cluster in a temporary folder, start it on a free 127.0.0.1 port, create the test
    user (password auth over TCP), yield it; stop it (fast shutdown) and remove the folder whatever happens."""
    bin_dir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="speech-hands-pg-"))
    data = root / "data"
    as_user: list[str] = []
    if os.getuid() == 0:  # postgres refuses root: the cluster belongs to the postgres system user
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        root.chmod(0o700)
    server = PostgresServer(bin=bin_dir, data=data, port=free_port(), as_user=as_user)
    started = False
    try:
        _run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"])
        with (data / "pg_hba.conf").open("w") as hba:  # the socket trusts the superuser; TCP asks for a password
            hba.write("local all postgres trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        options = f"-c listen_addresses=127.0.0.1 -c port={server.port} -c unix_socket_directories={data} -c fsync=off"
        pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data)]
        _run([*pg_ctl, "-l", str(root / "postgres.log"), "-w", "start", "-o", options])
        started = True
        server.psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        yield server
    finally:
        if started:
            subprocess.run(
                [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                timeout=120,
            )
        shutil.rmtree(root, ignore_errors=True)
