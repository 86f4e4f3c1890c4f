"""Test fixtures: every backend-facing test runs on the embedded SQLite backend and on a
real MongoDB-wire server: STREAMLOG_TEST_MONGO_URL (in CI: FerretDB v2.7 on PostgreSQL +
DocumentDB, the production-shaped server that uses its indexes, started by ``.ci/run``),
else a FerretDB v1.24 started here. The store contract suite and the fault tests also run
on FerretDB v1 (``ferretdb-v1``: STREAMLOG_TEST_FERRETDB1_URL, else started here), so both
servers stay covered. With CI set, a missing server fails the run instead of skipping."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ferretdb_binary() -> str | None:
    found = shutil.which("ferretdb")
    if found:
        return found
    gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("go") else ""
    for base in filter(None, [gopath, os.path.expanduser("~/go")]):
        candidate = Path(base) / "bin" / "ferretdb"
        if candidate.exists():
            return str(candidate)
    return None


def _wait_for(url: str, proc: subprocess.Popen | None, deadline: float) -> None:
    import pymongo

    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"ferretdb exited with {proc.returncode}")
        try:
            client = pymongo.MongoClient(url, serverSelectionTimeoutMS=500)
            client.admin.command("ping")
            client.close()
            return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
            time.sleep(0.1)
    raise RuntimeError(f"FerretDB did not answer at {url}: {last}")


@pytest.fixture(scope="session")
def mongo_server():
    """Base URL (no database) of the MongoDB-wire test server."""
    given = os.environ.get("STREAMLOG_TEST_MONGO_URL")
    if given:
        _wait_for(given, None, time.monotonic() + 15)
        yield given.rstrip("/")
        return
    yield from _ferretdb_v1()


@pytest.fixture(scope="session")
def ferretdb_v1_server(mongo_server):
    """Base URL of a FerretDB v1.24 (SQLite handler, no index pushdown): the second
    MongoDB-wire server of the store contract suite and the fault tests."""
    given = os.environ.get("STREAMLOG_TEST_FERRETDB1_URL")
    if given:
        _wait_for(given, None, time.monotonic() + 15)
        yield given.rstrip("/")
        return
    if not os.environ.get("STREAMLOG_TEST_MONGO_URL"):
        yield mongo_server  # the MongoDB tests run on FerretDB v1 already
        return
    yield from _ferretdb_v1()


def _server_kind(url: str) -> str:
    """``ferretdb-v1``, ``ferretdb-v2`` or ``mongodb``, from the server's ``buildInfo``."""
    import pymongo

    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=2000)
    try:
        build = client.admin.command("buildInfo")
    finally:
        client.close()
    if "ferretdbVersion" in build:
        return "ferretdb-v1"
    return "ferretdb-v2" if "ferretdb" in build else "mongodb"


@pytest.fixture(scope="session")
def documentdb_server(mongo_server):
    """Base URL of FerretDB v2 + DocumentDB: the run's MongoDB server when it is one (CI
    starts it with ../shared/mongo-wire/documentdb.sh and sets STREAMLOG_TEST_MONGO_URL)."""
    if _server_kind(mongo_server) == "ferretdb-v2":
        return mongo_server
    script = ROOT.parent / "shared" / "mongo-wire" / "documentdb.sh"
    message = (f"no FerretDB v2 + DocumentDB in this run: start it with {script} start and set "
               "STREAMLOG_TEST_MONGO_URL to the URL it prints" if script.exists() else
               f"no FerretDB v2 + DocumentDB here ({script} not found)")
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _ferretdb_v1():
    binary = _ferretdb_binary()
    if binary is None:
        message = "FerretDB not found: run scripts/install-ferretdb.sh (or set STREAMLOG_TEST_MONGO_URL)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    state = tempfile.mkdtemp(prefix="streamlog-ferretdb-")
    port = _free_port()
    log = open(Path(state) / "ferretdb.log", "wb")
    proc = subprocess.Popen(
        [binary, "--handler=sqlite", f"--sqlite-url=file:{state}/", f"--state-dir={state}",
         f"--listen-addr=127.0.0.1:{port}", "--debug-addr=-", "--telemetry=disable", "--log-level=error"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"mongodb://127.0.0.1:{port}"
    try:
        _wait_for(url, proc, time.monotonic() + 30)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(state, ignore_errors=True)


def _forget_client(url: str) -> None:
    import streamlog.client as client_module

    for key in [k for k in client_module._clients if k[1] == url]:
        client_module._clients.pop(key).close()


@pytest.fixture(params=["sqlite", "mongo"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def url(backend, request, tmp_path):
    """A fresh, empty database URL on each backend."""
    if backend == "sqlite":
        value = f"sqlite:///{tmp_path}/streamlog.db"
        yield value
        _forget_client(value)
        return
    server = "ferretdb_v1_server" if backend == "ferretdb-v1" else "mongo_server"
    yield from _fresh_mongo_database(request.getfixturevalue(server))


def _fresh_mongo_database(base: str):
    """Yield the URL of a new database on the MongoDB-wire server ``base``; drop it after."""
    database = f"t{uuid.uuid4().hex[:12]}"
    value = f"{base}/{database}"
    yield value
    _forget_client(value)
    import pymongo

    client = pymongo.MongoClient(base, serverSelectionTimeoutMS=2000)
    client.drop_database(database)
    client.close()


@pytest.fixture
def mongo_url(mongo_server):
    """A fresh, empty database on the MongoDB-wire test server (MongoDB-only tests)."""
    yield from _fresh_mongo_database(mongo_server)


@pytest.fixture
def sqlite_url(tmp_path):
    value = f"sqlite:///{tmp_path}/streamlog.db"
    yield value
    _forget_client(value)


@pytest.fixture
def own_ferretdb(tmp_path):
    """A FerretDB of the test's own (free port, private state dir) that it may stop and
    restart (``tests/faultlib.FerretServer``); stopped when the test ends."""
    from faultlib import FerretServer, ferretdb_or_skip

    server = FerretServer(ferretdb_or_skip(), tmp_path / "ferretdb")
    server.start()
    yield server
    server.close()


@pytest.fixture
def auth_ferretdb(tmp_path):
    """A FerretDB of the test's own with authentication on (user ``admin``, password
    ``right-pass``, database ``admin``); stopped when the test ends."""
    from faultlib import FerretServer, ferretdb_or_skip

    server = FerretServer(ferretdb_or_skip(), tmp_path / "auth")
    server.extra_args = ["--test-enable-new-auth", "--setup-database=admin", "--setup-username=admin",
                         "--setup-password=right-pass"]
    server.start()
    yield server
    server.close()
