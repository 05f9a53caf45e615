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
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL's server is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                           "`apt-get install postgresql`, as .ci/run does")
    root = tempfile.mkdtemp(prefix="mnist-sweeper-pg-")
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else None
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    data, port = f"{root}/data", free_port()

    def run(*cmd):
        subprocess.run(cmd, user=user, check=True, capture_output=True, text=True, cwd=root)

    try:
        run(f"{bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync")
        # loopback only; the unix socket goes into the temp dir, never /var/run/postgresql
        run(f"{bindir}/pg_ctl", "-D", data, "-l", f"{root}/log", "-w", "-o",
            f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200", "start")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], user=user, capture_output=True)
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
