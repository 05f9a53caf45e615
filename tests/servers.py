"""Real servers for the cluster tests, started by fixtures and always stopped: PostgreSQL 15 from Debian's
`postgresql` package (`.ci/run` installs it where missing) and a local Ray cluster of two nodes.

PostgreSQL listens on loopback only, on a free port, with trust auth, from a data dir in /tmp; initdb refuses
root, so as root it runs as the `postgres` user. Each test gets a database of its own.
"""
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


def _pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL's server is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                    "`apt-get install postgresql`, as .ci/run does")
    return Path(found[-1]).parent


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for this test process -> its base URL, `postgresql+psycopg://postgres@127.0.0.1:PORT`."""
    bindir = _pg_bin()
    root = tempfile.mkdtemp(prefix="mnist-sweeper-pg-")
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else None
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    data, port = f"{root}/data", free_port()

    def run(*cmd):
        subprocess.run(cmd, user=user, check=True, capture_output=True, text=True, cwd=root)

    run(f"{bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync")
    # loopback only; the unix socket goes into the temp dir, never /var/run/postgresql
    run(f"{bindir}/pg_ctl", "-D", data, "-l", f"{root}/log", "-w", "-o",
        f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200", "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], user=user, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres):
    """A fresh database on the test process's server -> its SQLAlchemy URL."""
    import psycopg
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{postgres}/{name}"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray cluster, a head and a second node on this machine, one CPU each -> the head's address."""
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        subprocess.run([*ray, "start", "--head", f"--port={port}", "--include-dashboard=false",
                        f"--temp-dir={temp}", *common], check=True, capture_output=True, env=env, timeout=120)
        subprocess.run([*ray, "start", f"--address=127.0.0.1:{port}", *common], check=True, capture_output=True,
                       env=env, timeout=120)
        _wait_for_nodes(f"127.0.0.1:{port}", 2)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([*ray, "stop", "--force"], capture_output=True, timeout=120)


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
