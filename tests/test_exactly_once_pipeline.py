"""A 3-stage ``streamlog up`` pipeline (producer → double → square) whose two consumer
stages are each SIGKILLed once at the worst point — after their window's sink records
were appended, right before the window's seal — and restarted by the runner: at the end
every item's result is in each sink exactly once (issue 20), on both backends, in ≤ 30 s."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from test_runner import _app, _finish, _records, _rows, _up

pytestmark = pytest.mark.timeout(60)

#: imported by each stage process: its first process SIGKILLs itself before the seal of its
#: 3rd window (after that window's records were appended to the sink); a marker file per
#: stage makes the restarted process run normally
ONCE_STAGES = '''\
import os
import signal

from streamlog.store.base import Store
from streamlog.store.mongo import MongoStore
from streamlog.store.sqlite import SQLiteStore

HERE = os.path.dirname(os.path.abspath(__file__))
_calls = {}


def _kill_before_third_seal(cls):
    original, folded = cls.commit, cls.commit_and_claim

    def before_seal(claim, state):
        if state == "committed":
            _calls[claim.group] = _calls.get(claim.group, 0) + 1
            if _calls[claim.group] == 3:
                try:
                    os.close(os.open(os.path.join(HERE, "killed-" + claim.group), os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    pass
                else:
                    os.kill(os.getpid(), signal.SIGKILL)

    def commit(self, claim, state="committed", error=None):
        before_seal(claim, state)
        return original(self, claim, state, error)

    def commit_and_claim(self, claim, next_claim):  # a backlog's commit, claiming the next window too
        if folded is not Store.commit_and_claim:  # the base one calls commit (counted there)
            before_seal(claim, "committed")
        return folded(self, claim, next_claim)

    cls.commit, cls.commit_and_claim = commit, commit_and_claim


for _cls in (SQLiteStore, MongoStore):
    _kill_before_third_seal(_cls)


def double(window):
    return [{"source": d["x"], "y": d["x"] * 2, "pid": os.getpid()} for d in window.data]


def square(window):
    return [{"source": d["source"], "z": d["y"] ** 2, "pid": os.getpid()} for d in window.data]
'''


def test_a_pipeline_with_sigkilled_stages_has_every_result_exactly_once(url, tmp_path: Path):
    n = 100
    (tmp_path / "once_stages.py").write_text(ONCE_STAGES)
    path = _app(tmp_path, f"""\
        [stages.producer]
        command = ["python", "producer.py", "{n}"]

        [stages.double]
        stream = "numbers"
        function = "once_stages:double"
        size = 10
        lease = 1
        sink = "doubled"

        [stages.square]
        stream = "doubled"
        function = "once_stages:square"
        size = 10
        lease = 1
        sink = "squared"
        """)
    code, out, err = _finish(_up(path, url, "--until-idle", "1"), timeout=30)
    assert code == 0, err
    assert (tmp_path / "killed-double").exists() and (tmp_path / "killed-square").exists(), err
    rows = _rows(out)
    assert rows["double"][7] == "1" and rows["square"][7] == "1", out  # each restarted once, after its kill
    for name in ("doubled", "squared"):
        counts = Counter(r["source"] for r in _records(url, name))
        assert set(counts) == set(range(n)) and set(counts.values()) == {1}, (name, sorted(counts.items()))
    assert sorted(r["z"] for r in _records(url, "squared")) == sorted((2 * x) ** 2 for x in range(n))
