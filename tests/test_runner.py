"""`streamlog up`: the pipeline file is validated up front (errors name the line), and the
runner runs, restarts and stops real stage processes with nothing lost — in real
subprocesses, as a user runs it, on both backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import ROOT, reaped, wait_until
from test_cli import fails, streamlog_process, subprocess_env

import streamlog
from streamlog.apps import SpecError, load_app
from streamlog.apps.spec import Lines

# -- the pipeline file ----------------------------------------------------------------------

GOOD = """\
url = "sqlite:///pipeline.db"

[stages.sensors]
command = ["python", "sensors.py"]

[stages.trainer]
stream = "labelled"
learner = "regression"
params = { features = ["x1", "x2"], target = "y" }
size = 60

[stages.predictor]
stream = "live"
predict = { stage = "trainer" }
size = 20
timeout = 0.5
sink = "predictions"

[stages.alert]
stream = "predictions"
function = "alerts:check"
size = 40
step = 20
replicas = 2
"""


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "app.toml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(SpecError) as caught:
        load_app(path)
    return str(caught.value)


def test_a_valid_file_gives_every_stage_with_its_options(tmp_path):
    path = tmp_path / "app.toml"
    path.write_text(GOOD)
    app = load_app(path)
    assert list(app.stages) == ["sensors", "trainer", "predictor", "alert"]
    assert app.url == f"sqlite:///{tmp_path / 'pipeline.db'}"  # relative to the file, not the cwd
    sensors, trainer, predictor, alert = app.stages.values()
    assert sensors.kind == "command" and sensors.runs == ["python", "sensors.py"] and sensors.group is None
    assert trainer.window == {"size": 60} and trainer.group == "trainer"
    assert predictor.runs == {"stream": "labelled", "group": "trainer", "model": "regression"}
    assert predictor.options == {"sink": "predictions"} and predictor.window == {"size": 20, "timeout": 0.5}
    assert alert.replicas == 2 and alert.group == "alert"  # replicas share the stage's group
    assert [s.name for s in app.select(["alert", "trainer"])] == ["trainer", "alert"]


@pytest.mark.parametrize("text, expected", [
    ("[stages.a]\nstream = \"s\"\nfunction = \"m:f\"\nsise = 5\n",
     "app.toml:4: stages.a.sise: unknown key 'sise' (did you mean 'size'?)"),
    ("[stages.a]\nstream = \"s\"\nfunction = \"m:f\"\n\nsize = \"ten\"\n",
     "app.toml:5: stages.a.size: must be an integer >= 1, not a string ('ten')"),
    ("url = \"sqlite:///x.db\"\n[stages.a]\nfunction = \"m:f\"\n",
     "app.toml:2: stages.a: a function stage needs stream = \"NAME\""),
    ("[stages.a]\nstream = \"s\"\nfunction = \"m:f\"\nlearner = \"kmeans\"\n",
     "app.toml:4: stages.a.learner: a stage needs exactly one of function, learner, predict, command "
     "(found 'function' and 'learner')"),
    ("[stages.a]\nstream = \"s\"\n",
     "app.toml:1: stages.a: a stage needs exactly one of function, learner, predict, command (found none)"),
    ("[stages.a]\nstream = \"s\"\nfunction = \"m:f\"\ninterval = 10\nstep = 2\n",
     "app.toml:5: stages.a.step: step needs size (sliding count windows: size = N, step = S)"),
    ("[stages.a]\nstream = \"s\"\nfunction = \"m:f\"\nsize = 10\ngap = 2\n",
     "app.toml:5: stages.a.gap: give one of size (count windows), interval (time windows) or gap"),
    ("[stages.a]\nstream = \"s\"\nlearner = \"regression\"\nparams = { features = [\"x\"], target = \"y\" }\n"
     "replicas = 2\n",
     "app.toml:5: stages.a.replicas: a learner keeps one model"),
    ("[stages.a]\nstream = \"s\"\nlearner = \"regresion\"\n",
     "app.toml:3: stages.a.learner: unknown learner 'regresion' (did you mean 'regression'?)"),
    ("[stages.a]\nstream = \"s\"\npredict = { stage = \"trainr\" }\n[stages.trainer]\nstream = \"t\"\n"
     "function = \"m:f\"\n",
     "app.toml:3: stages.a.predict.stage: no stage 'trainr' (did you mean 'trainer'?) in this file"),
    ("[stages.a]\ncommand = [\"python\", \"p.py\"]\nsize = 3\n",
     "app.toml:3: stages.a.size: a command stage runs a program: 'size' does not apply"),
    ("[stages.a]\nstream = \"bad name\"\nfunction = \"m:f\"\n",
     "app.toml:2: stages.a.stream: invalid stream name 'bad name'"),
    ("[stage.a]\nstream = \"s\"\n",
     "app.toml:1: stage: unknown key 'stage' (did you mean 'stages'?)"),
    ("[stages.a]\nstream = \"s\"\nfunction = \"m:f\"\n\n[restart]\nmax_crashes = 0\n",
     "app.toml:6: restart.max_crashes: must be an integer >= 1, not an integer (0)"),
    ("[stages.a]\nstream = \"s\"\nfunction = \"m:f\"\nsize = 5\nsize = 6\n",
     "app.toml:5: TOML syntax error: Cannot overwrite a value (column 9)"),
    ("[stages.a]\nstream = \"s\n",
     "app.toml:2: TOML syntax error: Illegal character"),
])
def test_every_error_names_the_file_the_line_and_the_key(tmp_path, text, expected):
    assert _error(tmp_path, text).replace(str(tmp_path) + "/", "").startswith(expected)


def test_lines_are_found_in_headers_dotted_keys_and_after_multiline_arrays():
    lines = Lines('a = 1\ncmd = [\n  "x = 2",\n]\n[stages."my.stage"]  # c\nsize = 3\nparams.k = 2\n')
    assert lines.line("cmd") == 2 and lines.line("x") == 1  # "x = 2" is inside an array
    assert lines.line("stages", "my.stage") == 5 and lines.line("stages", "my.stage", "size") == 6
    assert lines.line("stages", "my.stage", "params", "k") == 7
    assert lines.line("stages", "my.stage", "missing") == 5


def test_an_unknown_stage_is_an_error_naming_the_stages(tmp_path):
    path = tmp_path / "app.toml"
    path.write_text(GOOD)
    with pytest.raises(SpecError, match=r"app.toml: --stage: no stage 'traner' \(did you mean 'trainer'\?\) "
                                        r"\(stages: sensors, trainer, predictor, alert\)"):
        load_app(path).select(["traner"])


def test_an_invalid_file_starts_nothing_and_fails_with_one_line(tmp_path):
    path = tmp_path / "app.toml"
    path.write_text(GOOD.replace("size = 60", "size = 0"))
    db = tmp_path / "pipeline.db"
    line = fails(2, "up", str(path), "--url", f"sqlite:///{db}")
    assert line.endswith("app.toml:10: stages.trainer.size: must be an integer >= 1, not an integer (0)")
    assert not db.exists()
    path.write_text(GOOD)
    line = fails(2, "up", str(path), "--stage", "nope", "--url", f"sqlite:///{db}")
    assert "no stage 'nope'" in line and not db.exists()


def test_check_lists_the_stages_and_starts_nothing(tmp_path):
    from test_cli import cli

    path = tmp_path / "app.toml"
    path.write_text(GOOD)
    result = cli("up", str(path), "--check")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"{path}: 4 stages, valid"
    assert "  predictor: predict with regression of labelled/trainer on live (size=20, timeout=0.5; " \
           "group predictor) → predictions" in result.stdout
    assert not (tmp_path / "pipeline.db").exists()


# -- running pipelines ---------------------------------------------------------------------

STAGES = '''\
"""Stage functions of the test pipelines."""
import os
import time


def double(window):
    return [{"source": o, "y": d["x"] * 2, "pid": os.getpid()} for o, d in zip(window.offsets, window.data)]


def slow(window):
    time.sleep(float(os.environ.get("SLOW", "0.05")))
    return [{"source": o, "pid": os.getpid()} for o in window.offsets]


def total(window):
    return {"sum": sum(d["y"] for d in window.data), "n": len(window)}


def boom(window):
    raise SystemExit("boom in window %d" % window.seq)
'''

PRODUCER = '''\
import sys
import streamlog

n = int(sys.argv[1])
stream = streamlog.stream("numbers")
for start in range(0, n, 50):
    stream.extend([{"x": i} for i in range(start, min(n, start + 50))])
'''


def _app(tmp_path: Path, body: str) -> Path:
    (tmp_path / "stages.py").write_text(STAGES)
    (tmp_path / "producer.py").write_text(PRODUCER)
    path = tmp_path / "app.toml"
    path.write_text("restart = { delay = 0.1, max_delay = 1, max_crashes = 3, within = 60 }\n"
                    "stop_timeout = 20\n\n" + textwrap.dedent(body))
    return path


def _up(path: Path, url: str, *args: str) -> subprocess.Popen:
    return streamlog_process(["up", str(path), "--url", url, "--status-every", "0", *args], url)


def _finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    with reaped(proc):
        out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _rows(out: str) -> dict[str, list[str]]:
    """The final status table: stage → its cells (pid, state, windows, win/s, items, out, pending,
    restarts, last error)."""
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["stage", "pid", "state"], out
    return {line.split()[0]: line.split(None, 9)[1:] for line in lines[1:]}


def _open_claims(url: str, stream: str, group: str) -> list:
    return streamlog.connect(url).store.open_claims(stream, group)


def _records(url: str, name: str) -> list[dict]:
    client = streamlog.connect(url)
    return [r["data"] for r in client.get(name).read(0, None)] if name in client.streams() else []


def test_a_three_stage_pipeline_runs_to_the_end_with_every_item_accounted_for(url, tmp_path):
    n = 150
    path = _app(tmp_path, f"""\
        [stages.producer]
        command = ["python", "producer.py", "{n}"]

        [stages.double]
        stream = "numbers"
        function = "stages:double"
        size = 10
        sink = "doubled"

        [stages.total]
        stream = "doubled"
        function = "stages:total"
        size = 25
        sink = "totals"
        """)
    code, out, err = _finish(_up(path, url, "--until-idle", "1"))
    assert code == 0, err
    assert sorted(r["source"] for r in _records(url, "doubled")) == list(range(n))  # each exactly once
    totals = _records(url, "totals")
    assert sum(t["n"] for t in totals) == n and sum(t["sum"] for t in totals) == 2 * sum(range(n))
    rows = _rows(out)
    assert rows["producer"][1] == "finished"
    assert rows["double"][1:7] == ["stopped", "15", "-", str(n), str(n), "0"]
    assert rows["total"][1:7] == ["stopped", "6", "-", str(n), "6", "0"]
    assert "double | " not in err  # the stages printed nothing, the runner forwarded nothing
    assert _open_claims(url, "numbers", "double") == [] and _open_claims(url, "doubled", "total") == []


def test_a_stage_killed_with_sigkill_is_restarted_and_nothing_is_lost(url, tmp_path):
    n = 120
    path = _app(tmp_path, """\
        [stages.slow]
        stream = "numbers"
        function = "stages:slow"
        size = 5
        lease = 1.5
        sink = "done"
        """)
    streamlog.connect(url).stream("numbers").extend([{"x": i} for i in range(n)])
    proc = _up(path, url)
    with reaped(proc):
        first = wait_until(lambda: _records(url, "done"), timeout=30, message="a first window")
        victim = first[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        done = wait_until(lambda: (lambda r: r if {d["source"] for d in r} == set(range(n)) else None)(
            _records(url, "done")), timeout=45, message="every item processed after the restart")
        assert {d["pid"] for d in done} - {victim}, "a new process took over"
        wait_until(lambda: _open_claims(url, "numbers", "slow") == [], timeout=10, message="no open claims")
        proc.send_signal(signal.SIGTERM)
        code, out, err = _finish(proc)
    assert code == 0, err
    row = _rows(out)["slow"]
    assert row[1] == "stopped" and row[7] == "1", out  # restarted once
    assert "killed by SIGKILL" in row[8]
    assert "(crashed: killed by SIGKILL; restart 1 in " in err
    # at least once, none lost: every offset is in the sink; only the killed window may repeat
    sources = [d["source"] for d in _records(url, "done")]
    assert set(sources) == set(range(n)) and len(sources) - n <= 5


def test_sigterm_stops_every_stage_after_its_current_window_with_nothing_lost(url, tmp_path):
    n = 200
    path = _app(tmp_path, """\
        [stages.slow]
        stream = "numbers"
        function = "stages:slow"
        size = 5
        replicas = 2
        sink = "done"

        [stages.total]
        stream = "done"
        function = "stages:slow"
        size = 5
        sink = "totals"
        """)
    streamlog.connect(url).stream("numbers").extend([{"x": i} for i in range(n)])
    proc = subprocess.Popen([sys.executable, "-m", "streamlog.cli", "up", str(path), "--url", url,
                             "--status-every", "0"], env=dict(subprocess_env(url), SLOW="0.2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with reaped(proc):
        wait_until(lambda: (lambda r: len(r) >= 20 and len({d["pid"] for d in r}) == 2)(_records(url, "done")),
                   timeout=30, message="windows done by both replicas")
        proc.send_signal(signal.SIGTERM)
        code, out, err = _finish(proc, timeout=30)
    assert code == 0, err
    rows = _rows(out)
    assert [rows[s][1] for s in ("slow#1", "slow#2", "total")] == ["stopped"] * 3, out
    assert rows["slow#1"][7] == rows["slow#2"][7] == "0"
    stream = streamlog.connect(url).get("numbers")
    assert _open_claims(url, "numbers", "slow") == [] and _open_claims(url, "done", "total") == []
    done = sorted(d["source"] for d in _records(url, "done"))
    left = [item["offset"] for item in stream.buffer("slow", limit=None)]
    assert len(done) == len(set(done)) and len(done) < n  # stopped early, nothing twice
    assert sorted(done + left) == list(range(n))  # nothing lost: processed or still pending


def test_a_stage_that_keeps_crashing_stops_the_app_with_an_error_naming_it(sqlite_url, tmp_path):
    path = _app(tmp_path, """\
        [stages.fine]
        stream = "numbers"
        function = "stages:double"

        [stages.boom]
        stream = "numbers"
        function = "stages:boom"
        """)
    streamlog.connect(sqlite_url).stream("numbers").extend([{"x": i} for i in range(10)])
    code, out, err = _finish(_up(path, sqlite_url))
    assert code == 1, err
    assert err.strip().splitlines()[-1] == ("streamlog: error: stage 'boom' crashed 3 times within 60 s; "
                                            "last error: SystemExit: boom in window 3 (exited with code 1)")
    rows = _rows(out)
    assert rows["boom"][1] == "failed" and rows["boom"][7] == "2"
    assert rows["fine"][1] == "stopped"  # the others were stopped gracefully


def test_a_stage_that_cannot_start_stops_the_app_at_once(sqlite_url, tmp_path):
    path = _app(tmp_path, """\
        [stages.typo]
        stream = "numbers"
        function = "stages:dubble"
        """)
    code, out, err = _finish(_up(path, sqlite_url))
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith("streamlog: error: stage 'typo' cannot start: 'stages:dubble'")
    assert _rows(out)["typo"][7] == "0"  # not restarted: it would not help


def test_stage_runs_only_the_named_stages(sqlite_url, tmp_path):
    path = _app(tmp_path, """\
        [stages.producer]
        command = ["python", "producer.py", "1000"]

        [stages.double]
        stream = "numbers"
        function = "stages:double"
        size = 10
        sink = "doubled"
        """)
    streamlog.connect(sqlite_url).stream("numbers").extend([{"x": i} for i in range(30)])
    code, out, err = _finish(_up(path, sqlite_url, "--stage", "double", "--until-idle", "0.5"))
    assert code == 0, err
    assert list(_rows(out)) == ["double"]
    assert len(streamlog.connect(sqlite_url).get("numbers")) == 30  # the producer did not run here
    assert len(_records(sqlite_url, "doubled")) == 30


@pytest.mark.parametrize("example, expected", [
    ("sensors", ["trainer:   600 labelled items learned in 12 windows", "predictor: 600 predictions for 600 live",
                 "alerts in 'alerts'; the first over live offsets"]),
    ("clusters", ["kmeans: 900 points learned in 15 windows", "in their true cluster"]),
])
def test_the_example_apps_run_and_end_by_themselves(example, expected):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "run.py", ), example], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "stopped once idle" in proc.stdout
    for text in expected:
        assert text in proc.stdout, proc.stdout
    if example == "sensors":
        first = int(proc.stdout.split("the first over live offsets ")[1].split("..")[1].split()[0])
        assert first >= 300  # no alert before the drift (it begins at offset 300)
    else:
        assert float(proc.stdout.split("centres within ")[1].split()[0]) < 0.3
        assert float(proc.stdout.split("; ")[-1].split("%")[0]) > 95
