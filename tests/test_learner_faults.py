"""A learner in a consumer SIGKILLed around its checkpoint learns every window exactly once.

The checkpoint rule (``streamlog.learners.base``): a window's learning is checkpointed,
keyed by its ``seq``, before the function returns, and the runtime commits only after
that. A consumer process kills itself (``CHILD``) while learning window ``KILLED_SEQ``:
before its checkpoint is written (the window is learned in memory only: it is redelivered
and learned by the next consumer) or right after (it is redelivered, found in the
checkpoint, and not learned again). Another consumer then drains the group. Exact
accounting (also with ``windows_per_claim=2``: one checkpoint per run of two windows,
saved before the run's commit): the model holds every item once (``n_seen``, and the exact least-squares
coefficients of all items), every window's record is in the sink once, nothing is pending.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections import Counter

import numpy as np
import pytest
from helpers import ROOT, reaped
from test_learners import FEATURES, regression_rows

import streamlog
from streamlog.consumers import OnlineLinearRegression

pytestmark = pytest.mark.timeout(120)

SIZE, WINDOWS, KILLED_SEQ = 20, 6, 3

CHILD = textwrap.dedent("""
    import os, signal, sys
    import streamlog
    from streamlog.consumers import OnlineLinearRegression

    url, point, killed, per_claim = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = streamlog.connect(url).store
    real = store.save_model

    def dying(name, group, model, seq, state, metrics=None):
        if seq == killed and point == "before-checkpoint":  # learned, not saved
            os.kill(os.getpid(), signal.SIGKILL)
        real(name, group, model, seq, state, metrics)
        if seq == killed and point == "after-checkpoint":  # saved, the window not committed
            os.kill(os.getpid(), signal.SIGKILL)

    store.save_model = dying
    streamlog.streaming("src", size=%d, lease=1, blocking=False, sink="out", url=url,
                        windows_per_claim=per_claim).apply(OnlineLinearRegression(["x1", "x2"], "y"))
""" % SIZE)


def _consume(url: str, learner: OnlineLinearRegression, per_claim: int) -> None:
    streamlog.streaming("src", size=SIZE, lease=1, blocking=False, sink="out", url=url,
                        windows_per_claim=per_claim).apply(learner)


@pytest.mark.parametrize("per_claim", [1, 2], ids=["window", "runs-of-2"])
@pytest.mark.parametrize("point", ["before-checkpoint", "after-checkpoint"])
def test_a_learner_killed_around_its_checkpoint_learns_every_window_once(url, point, per_claim):
    # runs of 2 (windows_per_claim=2): one checkpoint per run, numbered by its last window (2, 4, 6)
    killed = KILLED_SEQ if per_claim == 1 else 4
    rows = regression_rows(SIZE * WINDOWS, seed=31)
    src = streamlog.connect(url).stream("src")
    src.extend(rows)
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, point, str(killed), str(per_claim)],
                             stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    with reaped(child):
        _, err = child.communicate(timeout=60)
    assert child.returncode == -9, f"the consumer was not killed at {point} (exit {child.returncode}):\n{err}"
    saved = src.model("OnlineLinearRegression")
    saved_seq = killed - (per_claim if point == "before-checkpoint" else 0)
    learned_before = saved_seq * SIZE
    assert saved["seq"] == saved_seq
    assert saved["state"]["n_seen"] == learned_before

    learner = OnlineLinearRegression(FEATURES, "y")  # a new process's learner: resumes from the checkpoint
    deadline = time.monotonic() + 30
    while src.info()["pending"]["default"] or src.store.open_claims("src", "default"):
        assert time.monotonic() < deadline, src.info()
        _consume(url, learner, per_claim)  # the killed window comes back once its 1 s lease has run out
        time.sleep(0.05)  # poll

    reference = OnlineLinearRegression(FEATURES, "y", checkpoint=False).learn(rows)
    # the windows after the checkpoint were learned here, once each; the ones in it were not
    assert learner.n_seen_ == SIZE * WINDOWS and learner.windows_ == WINDOWS - learned_before // SIZE
    assert src.model("OnlineLinearRegression")["state"]["n_seen"] == SIZE * WINDOWS
    np.testing.assert_allclose(np.r_[learner.coef_, learner.intercept_],
                               np.r_[reference.coef_, reference.intercept_], rtol=1e-9)
    records = [r["data"] for r in streamlog.connect(url).get("out").read(0, None)]
    assert Counter(r["seq"] for r in records) == Counter(range(1, WINDOWS + 1))  # each window's record once
