"""Docs that run: every fenced code block of README.md and docs/*.md is run here, or
carries a visible marker saying why not and which test runs it bounded.

The convention (also in docs/architecture.md, "Documentation that runs"):

* Each document runs in its own temporary working directory with ``STREAMLOG_URL``
  pointing at a fresh ``sqlite:///`` file there. Its blocks run in document order; one
  test per block, with ids like ``docs/guide.md:42`` so a failure names the place, and
  selecting one block first runs the blocks before it.
* ``python`` blocks of one document run in one namespace, in order. A block whose first
  line is ``# name.py`` is also written to that file, so later shell blocks can run
  ``python name.py`` (and ``streamlog run name:func``).
* ``bash``/``sh`` blocks run as a bash script (``set -e -o pipefail``) in that directory,
  with a timeout.
* ``console`` blocks, and any block whose first line starts with ``$ ``, are terminal
  sessions: each ``$ command`` runs, and its output is compared with the lines shown
  under it after normalising what changes from run to run (times, ages, database paths,
  the temporary directory, traceback frames, third-party drivers' messages, column
  widths).
* ``toml`` blocks are parsed (and compared with the file they quote, by their tests).
* Untagged blocks that are a command's synopsis (``streamlog tail NAME [-n N] …``) are
  checked against the command's ``--help``: every option they name exists.
* Everything else — and any block that cannot run as written (it needs a broker or a
  server, runs forever, installs packages) — carries, on the line before it,
  ``*Not run by the docs tests: REASON.*``. For python/shell/session blocks the marker
  names a test (``tests/test_x.py::test_y``) that runs the example bounded; this module
  checks that the named test exists.

Why a small collector rather than Sybil, pytest-examples or phmdoctest: most blocks
are shell sessions against CLI commands, servers and brokers, whose shown output needs
normalising (timestamps, temp paths, column widths) and whose documents share state
between blocks of different languages. Those libraries run Python (or doctest-style)
snippets; a hundred lines here cover the mix.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import IN_CI
from doclib import (
    ROOT,
    RUNNABLE,
    Block,
    Session,
    all_blocks,
    blocks,
    commands,
    existing_test,
    normalise,
)
from helpers import reaped, wait_until

import streamlog

BLOCKS = all_blocks()
_sessions: dict = {}


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    yield _sessions
    _sessions.clear()


def _doc_session(block, sessions, tmp_path_factory) -> Session:
    if block.path not in sessions:
        name = block.path.stem.replace(".", "-")
        sessions[block.path] = Session(block.path, tmp_path_factory.mktemp(f"docs-{name}"))
    return sessions[block.path]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block(block, sessions, tmp_path_factory):
    if block.marker:
        if block.lang in RUNNABLE or block.kind in ("python", "shell", "session"):
            assert block.tests or "`.ci/run`" in block.marker, f"{block.id}: its marker names no test that runs it"
        for file, name in block.tests:
            assert existing_test(file, name), f"{block.id}: its marker names {file}::{name}, which does not exist"
        return
    session = _doc_session(block, sessions, tmp_path_factory)
    for earlier in blocks(block.path)[:block.index]:
        if not earlier.marker:
            session.run(earlier)
    session.run(block)


def test_the_collector_finds_the_blocks():
    assert len(BLOCKS) > 80
    assert {b.kind for b in BLOCKS} >= {"python", "shell", "session", "toml", "synopsis"}


# --- the marked blocks, run bounded --------------------------------------------------

def _find(doc: str, start: str) -> Block:
    """The block of ``doc`` whose text starts with ``start``: the tests run the docs' own text."""
    found = [b for b in blocks(ROOT / doc) if b.text.startswith(start)]
    assert len(found) == 1, f"{doc}: {len(found)} blocks start with {start!r}"
    return found[0]


def _session(doc: str, tmp_path: Path) -> Session:
    directory = tmp_path / "docs"
    directory.mkdir()
    return Session(ROOT / doc, directory)


@pytest.mark.timeout(90)
def test_readme_consumer_and_learner(tmp_path, capsys):
    session = _session("README.md", tmp_path)
    consumer = _find("README.md", "# consumer.py")
    (session.dir / "consumer.py").write_text(consumer.text)
    session.run(_find("README.md", "# producer.py"))
    env = dict(session.env, PYTHONUNBUFFERED="1")
    with reaped(subprocess.Popen([sys.executable, "consumer.py"], cwd=session.dir, env=env,
                                 stdout=subprocess.PIPE, text=True)) as proc:
        first = proc.stdout.readline()  # the first window's line (the test's timeout bounds the wait)
        assert "'x1'" in first and "'y'" in first, first
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    capsys.readouterr()
    session.run(_find("README.md", "import streamlog\nfrom streamlog.consumers import OnlineLinearRegression"))
    model = session.namespace["model"]
    assert model.n_seen_ == 60  # its own group: the window the consumer took is learned too
    assert capsys.readouterr().out.strip().startswith("[") and any(model.coef_)


@pytest.mark.timeout(120)
def test_readme_demo_then_cli(tmp_path):
    session = _session("README.md", tmp_path)
    demo = session.shell("python scripts/demo.py --batches 2 --pause 0.02")
    assert demo.returncode == 0, demo.stdout
    cli = session.shell("set -e -o pipefail\n" + _find("README.md", "streamlog ls ").text)
    assert cli.returncode == 0, cli.stdout
    assert "demo.sensors" in cli.stdout and '"model":"OnlineLinearRegression"' in cli.stdout
    [(command, shown)] = commands(_find("docs/ml.md", "$ streamlog tail demo.model").text)
    real = session.shell(command)
    assert real.returncode == 0 and set(json.loads(real.stdout)) == set(json.loads(shown)), real.stdout


@pytest.mark.timeout(90)
def test_bridges_mqtt_example(tmp_path):
    from test_bridge_mqtt import Broker, Subscriber, _mosquitto, publish

    binary = _mosquitto()
    if binary is None:
        (pytest.fail if IN_CI else pytest.skip)("mosquitto not found: apt-get install mosquitto")
    broker = Broker(binary, tmp_path / "mosquitto")
    broker.start()
    session = _session("docs/bridges.md", tmp_path)
    port = str(broker.port)
    bridge = _find("docs/bridges.md", "streamlog bridge 'mqtt://").text.splitlines()[0].replace("1883", port)
    example = _find("docs/bridges.md", "import streamlog\nfrom streamlog.consumers").text.replace("1883", port)
    try:
        with reaped(subprocess.Popen(["bash", "-c", f"exec {bridge}"], cwd=session.dir, env=session.env,
                                     stderr=subprocess.DEVNULL)) as proc:
            # retained, one topic per device: the bridge gets them whenever it subscribes
            publish(broker, [(f"sensors/d{i}/reading",
                              {"x1": i / 60, "x2": (i % 7) / 7, "y": 2 * i / 60 - (i % 7) / 7 + 0.5})
                             for i in range(60)], retain=True)
            readings = streamlog.stream("readings", url=session.env["STREAMLOG_URL"])
            wait_until(lambda: len(readings) >= 60, timeout=30, message="60 readings from the bridge")
            proc.terminate()
            proc.wait(timeout=30)
        subscriber = Subscriber(broker, "models/#")
        try:
            with reaped(subprocess.Popen([sys.executable, "-c", example], cwd=session.dir, env=session.env)) as proc:
                wait_until(lambda: subscriber.messages, timeout=30, message="the model on MQTT")
                proc.terminate()
                proc.wait(timeout=30)
        finally:
            subscriber.close()
    finally:
        broker.stop()
    topic, record = subscriber.messages[0]
    assert topic == "models/OnlineLinearRegression" and record["n_seen"] == 60
    assert record["coef"] == pytest.approx({"x1": 2.0, "x2": -1.0}, abs=1e-6)


SERVE_BLOCKS = [("docs/serve.md", "curl -s -H 'Content-Type: application/json' -d '[{\"t\""),
                ("docs/serve.md", "curl -s -H 'Content-Type: application/json' -H 'Idempotency-Key"),
                ("docs/serve.md", "curl -s http://127.0.0.1:8765/streams |"),
                ("docs/serve.md", "curl -sN "),
                ("docs/serve.md", "curl -s http://127.0.0.1:8765/models"),
                ("docs/serve.md", "curl -s http://127.0.0.1:8765/metrics"),
                ("README.md", "curl --json")]


@pytest.mark.timeout(120)
def test_serve_examples_against_a_server(tmp_path):
    """The curl examples (and the shown sessions) against a real ``streamlog serve`` on a
    free port, with models saved on ``sensors`` and ``demo.sensors`` for the model service."""
    from conftest import _free_port

    from streamlog.consumers import OnlineLinearRegression

    session = _session("docs/serve.md", tmp_path)
    url = session.env["STREAMLOG_URL"]
    for name in ("sensors", "demo.sensors"):
        streamlog.stream(name, url=url).extend({"x1": i % 5, "x2": i % 3, "y": 2 * (i % 5) - (i % 3)}
                                               for i in range(60))
        streamlog.streaming(name, size=60, blocking=False, url=url).apply(
            OnlineLinearRegression(features=["x1", "x2"], target="y"))
    port = str(_free_port())
    log = tmp_path / "serve.log"
    with log.open("w") as err, reaped(subprocess.Popen(["streamlog", "serve", "--port", port], cwd=session.dir,
                                                       env=session.env, stderr=err)) as server:
        wait_until(lambda: _get(f"http://127.0.0.1:{port}/healthz"), timeout=30, message="the server")
        for doc, start in SERVE_BLOCKS:
            text = re.sub(r"(127\.0\.0\.1|localhost):8765", f"127.0.0.1:{port}", _find(doc, start).text)
            text = text.replace("curl -sN", "curl -sN --max-time 2").replace("curl -N", "curl -N --max-time 2")
            proc = session.shell(text)
            assert proc.returncode in (0, 28), f"{doc}: {start}\n{proc.stdout}"  # 28: --max-time ended a follow
            assert '"error"' not in proc.stdout, f"{doc}: {start}\n{proc.stdout}"
            # the events serve.md shows: retry, then one per item with its offset as id
            if "follow?start=earliest" in text:
                assert proc.stdout.startswith("retry: ") and "\nid: 0\ndata: {" in proc.stdout, proc.stdout
        for doc, start in [("docs/serve.md", "$ streamlog serve &"),
                           ("docs/cli.md", "$ streamlog serve --port 9000 &")]:
            for command, shown in commands(_find(doc, start).text):
                command = re.sub(r"127\.0\.0\.1:(8765|9000)", f"127.0.0.1:{port}", command)
                if command.startswith("streamlog serve"):  # the server the test started
                    banner = log.read_text().splitlines()[0].replace(f":{port}/", ":8765/")
                    assert normalise(banner) == normalise(shown.replace(":9000/", ":8765/")), banner
                elif not command.startswith("kill"):
                    real = session.shell(command.replace("/streams/sensors/", "/streams/shown/")
                                         .replace("/streams/demo/", "/streams/shown-cli/"))
                    assert normalise(real.stdout) == normalise(shown), f"{doc}: $ {command}\n{real.stdout}"
        server.terminate()
        server.wait(timeout=30)


def _get(address: str) -> bool:
    try:
        with urllib.request.urlopen(address, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _masked(line: str) -> str:
    """A report line with the parts that vary from run to run (timing decides which
    model version predicts what) replaced: decimals, model numbers, alert offsets."""
    line = re.sub(r"#\d+\.\.#\d+", "#<n>..#<n>", line)
    line = re.sub(r"\d+ alerts|offsets \d+\.\.\d+", "<alerts>", line)
    line = re.sub(r"[+-]?\d+\.\d+", "<x>", line)
    return re.sub(r"\s+", " ", line).strip()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("example", ["sensors", "clusters"])
def test_example_app_reports_match_the_docs(example, tmp_path):
    """``python examples/run.py NAME`` prints the report docs/apps.md shows (its stable
    parts, line by line in order) and, for sensors, the status table shown there."""
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "run.py"), example], check=False,
                          capture_output=True, text=True, timeout=100, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    real = [_masked(line) for line in proc.stdout.splitlines()]
    shown = _find("docs/apps.md", {"sensors": "sensors: 4 stages", "clusters": "kmeans: 900 points"}[example])
    lines = iter(real)
    for line in shown.text.splitlines():
        if line.strip() != "…":
            assert _masked(line) in lines, f"docs/apps.md:{shown.line}: not in the run's report, in order: {line}"
    if example == "sensors":  # stage, state, windows, items of the final table
        table = [row.split() for row in _find("docs/apps.md", "stage      pid").text.splitlines()]
        got = {row.split()[0]: row.split() for row in proc.stdout.splitlines() if len(row.split()) == 10}
        for row in table[1:]:  # below the header
            assert [got[row[0]][i] for i in (0, 2, 3, 5)] == [row[i] for i in (0, 2, 3, 5)], got[row[0]]


@pytest.mark.parametrize("script", ["bench.py", "bench_learners.py"])
def test_benchmark_scripts_start(script):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"], check=False, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "usage" in proc.stdout, proc.stderr
