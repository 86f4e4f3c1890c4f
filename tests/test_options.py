"""Issue 18, "options once": every window and consumer option is defined once, in
:mod:`streamlog.options`, and ``streaming()``, ``streamlog run`` and pipeline files all
take it. The walk over the fields finds each option as a ``streamlog run`` flag and a
pipeline stage key (unless its :class:`~streamlog.options.Option` says why not), and the
options that were missing (``max_size``, ``grace``, ``retry_max_delay``, ``poll``) work
through the CLI and a pipeline file."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import typer
from typer.testing import CliRunner

import streamlog
from streamlog.apps import load_app
from streamlog.apps.spec import CONSUMER_KEYS, STAGE_KEYS, WINDOW_KEYS, SpecError
from streamlog.apps.stage import build_consumer
from streamlog.cli import app
from streamlog.consumers.streaming import deferred
from streamlog.errors import ConsumerError
from streamlog.options import OPTION_CLASSES, OPTION_NAMES, ConsumerOptions, WindowOptions, option_fields

#: the options a flag or a stage key cannot carry, and the one word of the reason each gives
NOT_A_FLAG = {"emitter": "Python object"}
NOT_A_STAGE_KEY = {"emitter": "Python object", "blocking": "runner", "max_windows": "runner"}


def run_flags() -> dict[str, str]:
    """``streamlog run``'s options: flag → parameter name, from the click command typer builds."""
    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    return {opt: param.name for param in command.params for opt in param.opts}


def test_every_option_is_a_run_flag_and_a_pipeline_key_unless_it_says_why_not():
    flags = run_flags()
    seen = []
    for cls in OPTION_CLASSES:
        for field, info in option_fields(cls):
            seen.append(field.name)
            flag = info.flag_for(field.name)
            if field.name in NOT_A_FLAG:
                assert info.cli and NOT_A_FLAG[field.name] in info.cli, field.name
                assert flag not in flags, field.name
            else:
                assert info.cli is None, field.name
                assert flag in flags, f"streamlog run has no {flag} (option {field.name})"
                assert field.name == "url" or flags[flag] == field.name, field.name
                assert info.help, field.name
            if field.name in NOT_A_STAGE_KEY:
                assert info.pipeline and NOT_A_STAGE_KEY[field.name] in info.pipeline, field.name
                assert field.name not in STAGE_KEYS, field.name
            else:
                assert info.pipeline is None, field.name
                assert field.name in STAGE_KEYS, f"a pipeline stage has no key {field.name!r}"
    assert tuple(seen) == OPTION_NAMES
    assert {"max_size", "grace", "retry_max_delay", "poll", "key", "time_field", "workers"} <= set(seen)
    assert set(WINDOW_KEYS) | set(CONSUMER_KEYS) | {"url"} == set(seen) - set(NOT_A_STAGE_KEY)
    # the flags the run command had before keep their names and short forms
    for flag in ("--size", "--interval", "--relaxed", "--timeout", "--step", "--every", "--gap", "--group", "-g",
                 "--sink", "--once", "--max-windows", "--lease", "--max-retries", "--retry-delay", "--start",
                 "--workers", "--time-field", "--key", "--stream", "-s", "--verbose", "-v", "--url"):
        assert flag in flags, flag
    assert {"--max-size", "--grace", "--retry-max-delay", "--poll"} <= set(flags)


def test_streaming_takes_every_option_and_names_an_unknown_one():
    with deferred():  # names checked, nothing connected or run
        target = streamlog.streaming("s", **{name: None for name in OPTION_NAMES})(lambda window: None)
    assert set(target.options) == set(OPTION_NAMES)
    with pytest.raises(ConsumerError, match=r"streaming\(\) has no option 'max_sise' \(did you mean 'max_size'\?\)"):
        streamlog.streaming("s", interval=1, relaxed=True, max_sise=3)


def test_the_dataclasses_validate_and_build_the_emitter():
    emitter = WindowOptions(gap=5, max_size=3).build_emitter()
    assert type(emitter).__name__ == "SessionWindow" and emitter.max_size == 3
    assert WindowOptions(interval=2, grace=1).build_emitter().grace == 1
    assert WindowOptions().build_emitter().size == 1
    for bad, message in [(dict(size=2, gap=1), "give one of size=, interval=, gap= or emitter="),
                         (dict(size=2, step=1, max_size=1), "max_size= applies to relaxed and session windows"),
                         (dict(size=2, grace=1), "grace= applies to fixed time windows (interval=)")]:
        with pytest.raises(ConsumerError, match=message.replace("(", r"\(").replace(")", r"\)")):
            WindowOptions(**bad).validate()
    ConsumerOptions(retry_max_delay=0).validate()
    with pytest.raises(ConsumerError, match="retry_max_delay must be a number of seconds >= 0"):
        ConsumerOptions(retry_max_delay=-1).validate()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ConsumerOptions().group = "other"  # type: ignore[misc]


# ---------------------------------------------------------------------------
# the options that were missing, through streamlog run

BASE = 1_700_000_000  # a multiple of 2: on the epoch grid of 2-second windows


@pytest.fixture
def jobs(tmp_path):
    (tmp_path / "jobs.py").write_text(
        "import json\n\n"
        "def show(window):\n    print(json.dumps(window.offsets))\n\n"
        "def boom(window):\n    raise ValueError('boom')\n")
    return tmp_path


def invoke(jobs, url: str, *args: str):
    return CliRunner().invoke(app, ["run", f"{jobs}/jobs.py:show", "-s", "s", "--once", "--url", url, *args])


def shown(result) -> list[list[int]]:
    assert result.exit_code == 0, (result.output, result.exception)
    return [json.loads(line) for line in result.stdout.splitlines()[:-1]]


def test_run_max_size_caps_session_and_relaxed_windows(sqlite_url, jobs):
    stream = streamlog.stream("s", url=sqlite_url)
    stream.extend([{"ts": BASE + i * 0.5} for i in range(5)] + [{"ts": BASE + 100}])
    assert shown(invoke(jobs, sqlite_url, "--gap", "30", "--time-field", "ts", "--max-size", "2",
                        "-g", "session")) == [[0, 1], [2, 3], [4]]
    assert shown(invoke(jobs, sqlite_url, "--interval", "0.001", "--relaxed", "--max-size", "4",
                        "-g", "relaxed")) == [[0, 1, 2, 3], [4, 5]]


def test_run_grace_delays_fixed_time_windows(sqlite_url, jobs):
    streamlog.stream("s", url=sqlite_url).extend([{"ts": BASE + i * 0.5} for i in range(6)])  # up to 2.5 s
    # [0, 2) closes once an item at or after 2 + grace arrived: 2.5 s is enough for the default 0.5 s
    assert shown(invoke(jobs, sqlite_url, "--interval", "2", "--time-field", "ts", "-g", "a")) == [[0, 1, 2, 3]]
    assert shown(invoke(jobs, sqlite_url, "--interval", "2", "--time-field", "ts", "--grace", "1",
                        "-g", "b")) == []


def test_run_retry_max_delay_caps_the_backoff(sqlite_url, jobs):
    streamlog.stream("s", url=sqlite_url).extend([{"i": i} for i in range(2)])
    started = time.monotonic()
    result = CliRunner().invoke(app, ["run", f"{jobs}/jobs.py:boom", "-s", "s", "--size", "2", "--once",
                                      "--max-retries", "2", "--retry-delay", "600", "--retry-max-delay", "0",
                                      "--poll", "0.01", "--url", sqlite_url])
    assert result.exit_code == 6, result.output  # dead-lettered, without waiting 600 s
    assert time.monotonic() - started < 30
    assert [r["data"]["attempts"] for r in streamlog.connect(sqlite_url).get("s.dead").read()] == [3, 3]


def test_run_refuses_grace_and_max_size_where_they_do_not_apply(sqlite_url, jobs):
    for args, message in [(["--size", "2", "--grace", "1"], "--grace applies to time windows"),
                          (["--interval", "2", "--relaxed", "--grace", "1"], "--grace applies to time windows"),
                          (["--size", "2", "--max-size", "1"], "--max-size applies to relaxed time windows"),
                          (["--interval", "2", "--max-size", "1"], "--max-size applies to relaxed time windows"),
                          (["--gap", "2", "--max-size", "0"], "not a whole number of 1 or more"),
                          (["--interval", "2", "--grace", "-1"], "Invalid value"),
                          (["--size", "2", "--retry-max-delay", "inf"], "Invalid value")]:
        result = invoke(jobs, sqlite_url, *args)
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)


def test_run_takes_a_decorators_max_size_and_grace(sqlite_url, jobs):
    (jobs / "deco.py").write_text(
        "import json\nimport streamlog\n\n"
        "@streamlog.streaming('s', gap=30, time_field='ts', max_size=2, group='deco')\n"
        "def show(window):\n    print(json.dumps(window.offsets))\n")
    streamlog.stream("s", url=sqlite_url).extend([{"ts": BASE + i} for i in range(3)] + [{"ts": BASE + 100}])
    result = CliRunner().invoke(app, ["run", f"{jobs}/deco.py:show", "--once", "--url", sqlite_url])
    assert shown(result) == [[0, 1], [2]]


# ---------------------------------------------------------------------------
# ... and through a pipeline file

PIPELINE = """
[stages.sessions]
stream = "s"
function = "jobs:show"
gap = 30
max_size = 2
time_field = "ts"
retry_max_delay = 0
poll = 0.05

[stages.fixed]
stream = "s"
function = "jobs:show"
interval = 2
grace = 1
"""


def test_a_pipeline_file_takes_max_size_grace_retry_max_delay_and_poll(sqlite_url, tmp_path):
    path = tmp_path / "app.toml"
    path.write_text(PIPELINE)
    sessions, fixed = load_app(path).stages.values()
    assert sessions.window == {"gap": 30, "max_size": 2, "time_field": "ts"}
    assert sessions.options == {"retry_max_delay": 0, "poll": 0.05}
    assert fixed.window == {"interval": 2, "grace": 1}
    consumer = build_consumer(sessions, sqlite_url)
    assert consumer.emitter.max_size == 2 and consumer.emitter.gap == 30
    assert consumer.options["retry_max_delay"] == 0 and consumer.options["poll"] == 0.05
    assert consumer.options["time_field"] == "ts" and consumer.options["blocking"] is True
    assert build_consumer(fixed, sqlite_url).emitter.grace == 1
    # and the stage really windows that way
    streamlog.stream("s", url=sqlite_url).extend([{"ts": BASE + i} for i in range(3)] + [{"ts": BASE + 100}])
    lazy = streamlog.streaming("s", **sessions.window, **sessions.options, blocking=False, url=sqlite_url)
    seen: list[list[int]] = []
    assert lazy.apply(lambda window: seen.append(window.offsets)) == 2 and seen == [[0, 1], [2]]


@pytest.mark.parametrize("lines, expected", [
    ("gap = 30\nmax_size = 0\n", "app.toml:5: stages.a.max_size: must be an integer >= 1, not an integer (0)"),
    ("size = 3\nmax_size = 2\n", "app.toml:5: stages.a.max_size: max_size applies to relaxed time windows"),
    ("interval = 2\ngrace = -1\n", "app.toml:5: stages.a.grace: must be a number of seconds >= 0, not an integer (-1)"),
    ("retry_max_delay = \"1m\"\n", "app.toml:4: stages.a.retry_max_delay: must be a number of seconds >= 0"),
    ("poll = 0\n", "app.toml:4: stages.a.poll: must be a number of seconds > 0, not an integer (0)"),
    ("size = 3\nstep = 1\ntimeout = 2\n",
     "app.toml:6: stages.a.timeout: timeout= applies to tumbling count windows (size= without step=)"),
    ("blocking = false\n", "app.toml:4: stages.a.blocking: unknown key 'blocking'"),
])
def test_pipeline_option_keys_are_checked_like_the_others(tmp_path, lines, expected):
    path = tmp_path / "app.toml"
    path.write_text(f"[stages.a]\nstream = \"s\"\nfunction = \"m:f\"\n{lines}")
    with pytest.raises(SpecError) as caught:
        load_app(path)
    assert expected in str(caught.value), str(caught.value)
