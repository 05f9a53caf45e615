"""Real servers for the cluster tests, started by fixtures and always stopped: PostgreSQL 15 from Debian's
`postgresql` package (`.ci/run` installs it where missing) and a local Ray cluster.

PostgreSQL listens on loopback only, on a free port, with trust auth, from a data dir in /tmp; initdb refuses
root, so as root it runs as the `postgres` user. Each test gets a database of its own.
"""
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin():
    """The directory of PostgreSQL's server programs (Debian keeps them off PATH), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextlib.contextmanager
def running_postgres():
    """Start a throwaway PostgreSQL server; yield its base URL, `postgresql+psycopg://postgres@127.0.0.1:PORT`."""
    with postgres_server() as server:
        yield server.url


class PostgresServer:
    """A throwaway server that a test may also stop and start again (`restart`, `stop`), as a failover does."""

    def __init__(self, bindir, root, port):
        self.bindir, self.root, self.port = bindir, root, port
        self.data = f"{root}/data"
        self.user = "postgres" if os.geteuid() == 0 else None
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}"

    def pg_ctl(self, *args, check=True):
        return subprocess.run([f"{self.bindir}/pg_ctl", "-D", self.data, *args], user=self.user, check=check,
                              capture_output=True, text=True, cwd=self.root)

    def start(self):
        # loopback only; the unix socket goes into the temp dir, never /var/run/postgresql
        self.pg_ctl("-l", f"{self.root}/log", "-w", "-o",
                    f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200", "start")

    def stop(self, mode="fast"):
        """`fast`: clients are disconnected, as in a planned restart; `immediate`: as in a crash."""
        self.pg_ctl("-m", mode, "-w", "stop", check=False)

    def restart(self, down=0.0):
        """`pg_ctl restart`, or with `down` (seconds) a stop, that long without a server, and a start."""
        if not down:
            self.pg_ctl("-l", f"{self.root}/log", "-m", "fast", "-w", "restart")   # no -l: pg_ctl never returns
            return
        self.stop()
        time.sleep(down)
        self.start()


@contextlib.contextmanager
def postgres_server():
    """Start a throwaway PostgreSQL server -> a PostgresServer (its base URL is `.url`); stopped and removed after."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL's server is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                           "`apt-get install postgresql`, as .ci/run does")
    root = tempfile.mkdtemp(prefix="mnist-sweeper-pg-")
    server = PostgresServer(bindir, root, free_port())
    if server.user:
        shutil.chown(root, "postgres", "postgres")
    try:
        subprocess.run([f"{bindir}/initdb", "-D", server.data, "-U", "postgres", "-A", "trust", "--no-sync"],
                       user=server.user, check=True, capture_output=True, text=True, cwd=root)
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def create_database(server):
    """A fresh database on `server` (a base URL) -> its SQLAlchemy URL."""
    import psycopg
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for this test process -> its base URL."""
    try:
        with running_postgres() as url:
            yield url
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture
def pg_url(postgres):
    """A database of its own for one test."""
    return create_database(postgres)


@pytest.fixture
def pg_server():
    """A PostgreSQL server of this test's own, which it may restart or stop (tests/test_storage_blinks.py)."""
    try:
        with postgres_server() as server:
            yield server
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster, its head node on this machine with two CPUs -> the head's address. (A second node on
    the same machine proves nothing more about the launcher and costs seconds of start-up.)"""
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray-")   # short: Ray's unix sockets live under it (a 107-byte limit)
    common = ["--num-cpus=2", "--object-store-memory=100000000", "--disable-usage-stats"]
    # loopback only, so no token: otherwise a token a local ray.init() left in ~/.ray turns token auth on for the
    # head, and the second node and the sweeps (which inherit os.environ) must present it
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        args = ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"]
        p = subprocess.run([*ray, "start", *args, *common], capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, f"ray start {' '.join(args)}: {p.stdout[-1500:]} {p.stderr[-1500:]}"
        _wait_for_nodes(f"127.0.0.1:{port}", 1)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([*ray, "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE")
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def _wait_for_nodes(address, n, timeout=60):
    probe = f"import ray; ray.init(address='{address}', logging_level='ERROR'); print(len([x for x in ray.nodes() if x['Alive']]))"
    deadline = time.time() + timeout
    while True:
        p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        if p.returncode == 0 and p.stdout.strip().splitlines()[-1] == str(n):
            return
        if time.time() > deadline:
            pytest.fail(f"the Ray cluster at {address} never had {n} nodes: {p.stdout} {p.stderr[-500:]}")
        time.sleep(1)
