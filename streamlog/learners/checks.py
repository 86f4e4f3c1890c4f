"""Conformance checks for streaming learners (as river's ``check_estimator``).

A learner's checkpoint is only useful if a resumed learner is *the same model*: this
module checks it, for one learner configuration at a time. The consume path does not (it
only loads its first checkpoint back once, see :class:`~streamlog.consumers.PartialFit`);
``tests/test_learner_conformance.py`` runs every check over every learner streamlog ships
and every model ``docs/ml.md`` lists as supported. Check your own model the same way::

    from streamlog.consumers import PartialFit
    from streamlog.learners.checks import check_learner

    check_learner(lambda: PartialFit(MyModel(seed=0), ["x1", "x2"], "y"), rows,
                  url=f"sqlite:///{tmp_path}/check.db")

``make`` builds a new, unfitted learner (the same configuration and seed each call);
``rows`` are items (dicts) holding its features and target, learned in windows of
``window`` items (at least four windows' worth). Each check raises ``AssertionError``
naming what differs:

* :func:`check_not_fitted` — ``predict`` before learning raises ``NotFittedError``;
* :func:`check_state_round_trip` — ``state()`` → a new instance's ``load`` → the same state
  and predictions, and the same state and predictions again after both learn the same
  windows; the state is plain data any backend stores (a JSON trip, no nested arrays);
* :func:`check_resume` — through a real stream: a consumer stops halfway, a new instance
  resumes from its checkpoint and ends where an uninterrupted learner ends, and another
  new instance attaching with nothing left to do predicts the same;
* :func:`check_deterministic` — two instances learning the same windows end identical
  (all but the internal state of random generators, which river creates unseeded in
  places learning never draws from, e.g. per ``proba.Gaussian``: a generator that
  learning draws from shows in what is learned);
* :func:`check_global_random_state` — learning (as a consumer, with checkpoints),
  ``state``, ``load`` and ``predict`` leave ``numpy.random``'s and ``random``'s global
  state untouched.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import numpy as np
import orjson

from ..items import nested_array_path
from ..window import Window
from .base import Learner, not_fitted_error
from .state_format import TAG

__all__ = ["check_learner", "check_not_fitted", "check_state_round_trip", "check_resume", "check_deterministic",
           "check_global_random_state", "CHECKS"]

Make = Callable[[], Learner]


def check_learner(make: Make, rows: list[dict], *, url: str | None = None, window: int = 60) -> None:
    """Run every check on the learner ``make()`` builds (:func:`check_resume` only with ``url``,
    a database the check may create the stream ``conformance`` in)."""
    for check in CHECKS:
        check(make, rows, window=window)
    if url is not None:
        check_resume(make, rows, url, window=window)


def check_not_fitted(make: Make, rows: list[dict], window: int = 60) -> None:
    """``predict`` (many items, one item) before learning raises ``NotFittedError``."""
    model = make()
    for data in (rows[:3], rows[0]):
        try:
            model.predict(data)
        except not_fitted_error():
            continue
        raise AssertionError(f"{_name(model)}: predict before learning did not raise NotFittedError")


def check_state_round_trip(make: Make, rows: list[dict], window: int = 60) -> None:
    """``state()`` → ``make().load(state)``: the same state and predictions now, and after
    both learn the same further windows."""
    chunks = _windows(rows, window)
    half = len(chunks) // 2
    model = make()
    for chunk in chunks[:half]:
        model.learn(chunk)
    state = model.state()
    found = nested_array_path(_stored(state))
    assert found is None, f"{_name(model)}: the state has a list inside a list at {found} (FerretDB rejects it)"
    restored = make().load(_stored(state))
    _same_state(restored, model, "after load")
    _same_predictions(restored, model.predict(rows), rows, "after load")
    for chunk in chunks[half:]:
        model.learn(chunk)
        restored.learn(chunk)
    _same_state(restored, model, "after learning on from the loaded state")
    _same_predictions(restored, model.predict(rows), rows, "after learning on from the loaded state")


def check_resume(make: Make, rows: list[dict], url: str, window: int = 60, stream: str = "conformance") -> None:
    """Through ``streamlog.streaming(..., blocking=False)`` on ``url``: stop after half the
    windows, resume in a new instance, and end where an uninterrupted learner ends (all
    but the state of random generators, as in :func:`check_deterministic`); a new instance
    attaching with nothing left to do then holds exactly the resumed one's state."""
    import streamlog

    chunks = _windows(rows, window)
    half = len(chunks) // 2
    target = streamlog.stream(stream, url=url)
    assert not target.exists() or len(target) == 0, f"stream {stream!r} on {url} is not empty"
    target.extend([item for chunk in chunks for item in chunk])

    def consume(model: Learner, limit: int | None) -> int:
        return streamlog.streaming(stream, size=window, blocking=False, max_windows=limit, url=url).apply(model)

    first = make()
    assert consume(first, half) == half
    resumed = make()
    assert consume(resumed, None) == len(chunks) - half, f"{_name(resumed)}: the resumed consumer relearned windows"
    straight = make()
    for chunk in chunks:
        straight.learn(chunk)
    attached = make()  # nothing left: attaches, loads the newest checkpoint, learns nothing
    assert consume(attached, None) == 0
    assert resumed.n_seen_ == straight.n_seen_, f"{_name(resumed)}: resumed with {resumed.n_seen_} items learned"
    _same_state(resumed, straight, "resumed vs uninterrupted", keys=("model", "n_seen", "n_skipped", "config"),
                generators=False)
    _same_state(attached, resumed, "attached after the last window")
    # each predicts once (predicting may draw from the model's own generator, e.g. river's SWINN)
    expected = straight.predict(rows)
    _same_predictions(resumed, expected, rows, "resumed vs uninterrupted")
    _same_predictions(attached, expected, rows, "attached after the last window vs uninterrupted")


def check_deterministic(make: Make, rows: list[dict], window: int = 60) -> None:
    """Two instances (the same seed) learning the same windows end with the same state."""
    one, two = make(), make()
    for chunk in _windows(rows, window):
        one.learn(chunk)
        two.learn(chunk)
    _same_state(one, two, "two instances learning the same data", generators=False)
    _same_predictions(one, two.predict(rows), rows, "two instances learning the same data")


def check_global_random_state(make: Make, rows: list[dict], window: int = 60) -> None:
    """Consuming windows (checkpoints included), ``state``, ``load``, ``learn`` and
    ``predict`` leave the global random generators (``numpy.random``, ``random``) alone."""
    chunks = _windows(rows, window)
    stream = _MemoryStream()
    model = make()
    before = _global_random()
    for seq, chunk in enumerate(chunks[:-1], 1):
        model(Window(stream, "default", seq, 1, list(range(len(chunk))), [0] * len(chunk), chunk))
        _unchanged(before, model, f"consuming window {seq} (learn and checkpoint)")
    state = model.state()
    _unchanged(before, model, "state()")
    restored = make().load(_stored(state))
    _unchanged(before, model, "load()")
    restored.learn(chunks[-1])
    _unchanged(before, model, "learn()")
    restored.predict(rows)
    _unchanged(before, model, "predict()")


#: the checks :func:`check_learner` runs without a database
CHECKS = (check_not_fitted, check_state_round_trip, check_deterministic, check_global_random_state)


# -- helpers ----------------------------------------------------------------------------------


class _MemoryStream:
    """Just enough of a Stream for a learner's checkpoints."""

    name = "conformance"

    def __init__(self):
        self.saved: dict[tuple[str, str], tuple[int, dict]] = {}

    def model(self, name: str, group: str = "default") -> dict | None:
        found = self.saved.get((group, name))
        return None if found is None else {"name": name, "group": group, "seq": found[0], "state": found[1]}

    def save_model(self, name: str, group: str, seq: int, state: dict, point: dict | None = None) -> None:
        self.saved[(group, name)] = (seq, _stored(state))


def _windows(rows: list[dict], window: int) -> list[list[dict]]:
    chunks = [rows[lo:lo + window] for lo in range(0, len(rows) - window + 1, window)]
    if len(chunks) < 4:
        raise ValueError(f"the checks need at least 4 windows of {window} items, got {len(rows)} items")
    return chunks


def _name(model: Learner) -> str:
    inner = getattr(model, "estimator", None)
    return f"{type(model).__name__}({type(inner).__name__})" if inner is not None else type(model).__name__


def _stored(state: dict) -> Any:
    """``state`` as the store gives it back (a JSON trip)."""
    return orjson.loads(orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY))


def _same_state(a: Learner, b: Learner, when: str, keys: tuple[str, ...] | None = None,
                generators: bool = True) -> None:
    """The states of ``a`` and ``b`` are equal (only ``keys``; without the internal state of
    random generators unless ``generators``)."""
    sa, sb = _stored(a.state()), _stored(b.state())
    if keys is not None:
        sa, sb = {k: sa.get(k) for k in keys}, {k: sb.get(k) for k in keys}
    if not generators:
        sa, sb = _without_generator_states(sa), _without_generator_states(sb)
    found = _first_difference(sa, sb)
    assert found is None, f"{_name(a)}: the states differ {when}, at {found}"


def _without_generator_states(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(TAG) in ("random", "RandomState", "Generator"):
            return {k: v for k, v in value.items() if k != "state"}
        return {k: _without_generator_states(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_generator_states(v) for v in value]
    return value


def _same_predictions(a: Learner, expected: Any, rows: list[dict], when: str) -> None:
    """``a`` predicts ``expected`` for ``rows``."""
    pa, pb = np.asarray(a.predict(rows)), np.asarray(expected)
    try:
        np.testing.assert_array_equal(pa, pb)
    except AssertionError as exc:
        raise AssertionError(f"{_name(a)}: the predictions differ {when}: {exc}") from None


def _first_difference(a: Any, b: Any, path: str = "state") -> str | None:
    if type(a) is not type(b):
        return f"{path} ({type(a).__name__} vs {type(b).__name__})"
    if isinstance(a, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{path}.{key} (present on one side only)"
            found = _first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path} (length {len(a)} vs {len(b)})"
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path} ({a!r} vs {b!r})"


def _global_random() -> tuple:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return (kind, keys.copy(), pos, has_gauss, cached), random.getstate()


def _unchanged(before: tuple, model: Learner, what: str) -> None:
    (kind, keys, pos, has_gauss, cached), python = _global_random()
    (kind0, keys0, pos0, has_gauss0, cached0), python0 = before
    numpy_same = (kind, pos, has_gauss, cached) == (kind0, pos0, has_gauss0, cached0) and np.array_equal(keys, keys0)
    assert numpy_same, f"{_name(model)}: {what} drew from numpy's global random generator"
    assert python == python0, f"{_name(model)}: {what} drew from Python's global random generator"
