"""The :class:`Learner` base class: a consumer function that learns and checkpoints.

A learner is called once per window by the streaming runtime. Per window it

1. binds to the window's stream and group and resumes from the newest checkpoint saved
   under ``(stream, group, name)``, if there is one — done once, by :meth:`Learner.attach`,
   which the runtime calls when the consumer starts (before any window is claimed, so a
   ``blocking=False`` run with nothing to do still leaves the learner resumed), or else on
   the first window;
2. does not learn the window again if that window is already in its state (a retry after
   its sink failed, or a redelivery after a crash between checkpoint and commit — see
   below), but returns its record again;
3. scores the window with the current model (*prequential* evaluation: predict,
   then learn), learns from it, and saves a checkpoint of its state keyed by the
   window's ``seq``;
4. returns a small record of the model (for ``sink=``).

At least once for the sink: the runtime hands the record to ``sink=`` after the function
returns and commits the window only after the sink took it, so a window whose sink failed
(or whose process died before the sink) comes back although its learning is already
checkpointed. It is not learned twice, and its record is sent again: for the newest
window in the state the record is the one sent the first time (the model is still the
state after that window, unless a late window filled a hole since). For an older
window — a retry that comes back after later windows were learned, possible only across
processes — the state after that window alone no longer exists: the record holds that
window's own fields (``seq``, offsets, ``items``, ``time``) with the current model
(``n_seen`` and summary), and ``"model_seq"``: the newest window in that model, so that
a reader can tell the summary is newer than the window (the record of a late window that
fills a hole says so too).

Exactly-once learning with one consumer per key: the runtime commits a window only
after the function returns, so the checkpoint is always written first. If the
process dies between the two, the window comes back with a ``seq`` the checkpoint
already holds and it is skipped; if it dies before the checkpoint, the window is
redelivered and learned once. Windows can come back out of order (a restarted
process may take new windows before the dead one's lease on an older window runs
out), so the state records which window numbers below the newest one it has not
learned yet ("holes") and learns those when they arrive. Checkpoints are keyed by the
newest window in the state, so learning a late window rewrites that version and the
newest checkpoint always holds everything learned.

With ``windows_per_claim=N`` the runtime hands a learner runs of up to N windows and
saves the checkpoint once per run, after its last window and before its commit
(:meth:`Learner.flush_checkpoint`): the same rule, per run instead of per window.

If learning or checkpointing a window fails, the in-memory model is rolled back to
the last checkpoint before the next window, so a retried window is never counted twice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from ..errors import ConsumerError
from ..items import nested_array_path
from ..names import check_name
from . import threads as _threads
from .data import check_columns, matrix, single
from .not_fitted import not_fitted_error
from .seen import is_learned, mark_learned

STATE_VERSION = 1
_MAX_POINT_BYTES = 4096  # a checkpoint's metrics point (the model's history) stays below this


def __getattr__(name: str):
    if name == "NotFittedError":
        return not_fitted_error()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Learner:
    """Base class of the streaming learners (see the module docstring for the protocol).

    Subclasses implement ``_fit(X, y)``, ``_infer(X)``, ``_model_state()``,
    ``_load_model_state(state)``, ``_config()``, ``_reset_model()``, ``fitted``,
    ``summary()`` and :meth:`configured_from` (how a checkpoint is rebuilt); the base class
    handles input conversion, prequential scoring, checkpoints and resume.

    Common options: ``features`` (field names, in order), ``target`` (the field to
    predict, for supervised learners), ``name`` (the checkpoint key with stream and group;
    default: the class name), ``checkpoint`` (False: learn without saving or resuming
    state), ``threads`` (cap BLAS/OpenMP pools at this many threads once the learner
    starts consuming — see :mod:`~streamlog.learners.threads`; None: leave them).

    Common attributes: ``n_seen_`` (items learned), ``n_skipped_`` (items ignored for a
    missing or non-finite value), ``seq_`` (newest window learned), ``windows_`` (windows
    learned by this instance).

    One consumer per key: a learner's state is one model, so run one consumer process
    per (stream, group, name). Consumers that share a group split its windows between
    them; each would learn only its share and overwrite the other's checkpoints. To
    train several models on one stream, give each its own group (fan-out).
    """

    #: subclasses that need a target set this
    needs_target = False

    def __init__(self, features, target: str | None = None, *, name: str | None = None,
                 checkpoint: bool = True, threads: int | None = 1):
        self.features = check_columns(features, "features")
        if target is not None and not (isinstance(target, str) and target):
            raise ConsumerError(f"target must be a field name, not {target!r}")
        if self.needs_target and target is None:
            raise ConsumerError(f"{type(self).__name__} needs target= (the field to predict)")
        if target is not None and target in self.features:
            raise ConsumerError(f"the target {target!r} is also one of the features")
        self.target = target
        self.name = check_name(name if name is not None else type(self).__name__, "model")
        self.checkpoint = bool(checkpoint)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConsumerError(f"threads must be a positive integer or None, not {threads!r}")
        self.threads = threads
        self.n_seen_ = 0
        self.n_skipped_ = 0
        self.seq_: int | None = None
        self.windows_ = 0
        self._holes: list[list[int]] = []
        self._key: tuple[str, str] | None = None
        self._dirty = False
        self._initial: dict | None = None
        self._stream: Any = None  # bound with _key
        self._deferred = False  # checkpoints once per claim (flush_checkpoint), not per window
        self._unsaved = False  # windows learned since the last checkpoint (deferred only)

    # -- what subclasses provide ------------------------------------------------

    @property
    def fitted(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _infer(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score(self, X: np.ndarray, y: np.ndarray | None) -> None:
        """Prequential scoring before learning (default: nothing)."""

    def _model_state(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load_model_state(self, state: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _config(self) -> dict:
        """Settings a checkpoint must have been saved with to be loaded by this instance."""
        return {"features": self.features, "target": self.target}

    @classmethod
    def configured_from(cls, config: dict, model: dict, *, name: str,
                        template: "Learner | None" = None) -> "Learner":  # pragma: no cover - abstract
        """A new learner of this class with the settings a checkpoint was saved with (its
        ``config`` and ``model`` parts), named ``name``, neither checkpointing nor capping
        threads, and not yet holding the checkpoint's state (:meth:`load` it next).
        ``template``: a learner of this class to copy what the checkpoint cannot say.
        Raises ``KeyError``/``TypeError``/``ValueError`` for a malformed ``config``."""
        raise NotImplementedError

    def _reset_model(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_checkpoint(self) -> None:
        """Raise if the state cannot be checkpointed faithfully (called before each save)."""

    def summary(self) -> dict:
        """A small, plain summary of the model (coefficients or centres, running error)."""
        return {}

    def history_point(self, summary: dict | None = None) -> dict:
        """The metrics saved with each checkpoint, one point of the model's history
        (``Stream.model_history``, the dashboard's charts): ``n_seen``, ``n_skipped`` and
        :meth:`summary` (``summary``: that summary, already made), as plain data. A summary
        over 4 KiB encoded (an estimator with very many coefficients), or one holding a list
        inside a list, keeps its scalars only, so a point stays small and storable anywhere."""
        point = {"n_seen": self.n_seen_, "n_skipped": self.n_skipped_}
        if summary is None:
            summary = self._fitted_summary() or {}
        point.update(summary)
        try:
            plain = orjson.loads(orjson.dumps(point, option=orjson.OPT_SERIALIZE_NUMPY))
        except TypeError:
            plain = None
        if plain is None or len(orjson.dumps(plain)) > _MAX_POINT_BYTES or nested_array_path(plain):
            # too big, not plain data, or a list in a list (which FerretDB cannot store): scalars only
            plain = {k: v for k, v in point.items() if v is None or isinstance(v, (bool, int, float, str))}
        return plain

    def _fitted_summary(self) -> dict | None:
        """:meth:`summary` of a fitted model; None when unfitted or when it failed."""
        try:
            return self.summary() if self.fitted else None
        except Exception:  # noqa: BLE001 - a summary is informative only: never fail a window for it
            return None

    # -- input ----------------------------------------------------------------

    def feature_matrix(self, data: Any, where: str = "the items", owner: str | None = None) -> np.ndarray:
        """The features of ``data`` (a DataFrame, a list of dicts, one dict or an array) as a
        float matrix, one row per item, in ``features`` order, values as given (None → NaN;
        nothing dropped). A missing feature raises :class:`~streamlog.errors.MissingFieldError`
        naming it, as found in ``where``; errors start with ``owner`` (default: the class name)."""
        return matrix(owner or type(self).__name__, data, self.features, where)

    def _arrays(self, data: Any, y: Any = None, need_target: bool = True):
        owner = type(self).__name__
        both = need_target and self.target is not None and y is None
        if both and isinstance(data, np.ndarray):
            raise ConsumerError(f"{owner}: an array holds the features only; give the targets as y=")
        X = matrix(owner, data, self.features + [self.target] if both else self.features)
        if not need_target or self.target is None and y is None:
            return X, None
        if y is not None:
            y = np.asarray(y, dtype=float).reshape(-1)
        else:
            y = X[:, -1]
            X = X[:, :-1]
        if len(y) != len(X):
            raise ConsumerError(f"{owner}: {len(X)} rows of features but {len(y)} targets")
        return X, y

    def _clean(self, X: np.ndarray, y: np.ndarray | None):
        """Drop rows with a missing (None/NaN) or infinite value; count them in ``n_skipped_``."""
        if np.isfinite(X.sum() + (0.0 if y is None else y.sum())):
            return X, y  # the common case, one cheap check (an overflow to inf takes the slow path)
        ok = np.isfinite(X).all(axis=1)
        if y is not None:
            ok &= np.isfinite(y)
        if ok.all():
            return X, y
        self.n_skipped_ += int((~ok).sum())
        return X[ok], (None if y is None else y[ok])

    # -- the river-like API -----------------------------------------------------

    def learn(self, data: Any, y: Any = None) -> "Learner":
        """Learn from a DataFrame, a list of dicts, one dict, or an array of feature columns
        (then ``y`` gives the targets). Rows with missing values are skipped and counted.

        Once the model has learned something, the data is scored first (the running
        error is prequential: every item is predicted before it is learned)."""
        X, y = self._arrays(data, y)
        self._learn_arrays(X, y)
        return self

    def _learn_arrays(self, X: np.ndarray, y: np.ndarray | None) -> None:
        """Score (once fitted), then learn: the prequential step shared by learn() and windows."""
        X, y = self._clean(X, y)
        if len(X):
            if self.fitted:
                self._score(X, y)
            self._fit(X, y)
            self.n_seen_ += len(X)

    def predict(self, data: Any):
        """Predictions for a DataFrame, a list of dicts or an array (→ array), or one dict (→ scalar).

        Raises :class:`NotFittedError` (scikit-learn's, as a streamlog error) until the learner
        has learned something."""
        X, _ = self._arrays(data, need_target=False)
        self._check_fitted()
        out = self._infer(X)
        return out[0].item() if single(data) else out

    def predictions(self, X: np.ndarray) -> list[dict]:
        """The fields of one prediction record per row of the feature matrix ``X`` (finite
        values, see :meth:`feature_matrix`): ``{"prediction": value}``; k-means gives
        ``{"cluster": i, "distance": d}``. What predict stages and the model service send."""
        return [{"prediction": p} for p in np.asarray(self.predict(X)).tolist()]

    def check_proba(self) -> None:
        """Raise :class:`ConsumerError` unless :meth:`probabilities` can answer."""
        raise ConsumerError(f"proba=True: {type(self).__name__} has no predict_proba")

    def probabilities(self, X: np.ndarray) -> list[dict]:
        """``{class: probability}`` per row of ``X``, for a classifier (see :meth:`check_proba`)."""
        self.check_proba()
        return []

    def prepare_to_predict(self) -> None:
        """Work out now what the first prediction would otherwise work out lazily, so that
        predictions made from several threads afterwards only read (default: nothing)."""

    # -- durable state ------------------------------------------------------------

    def state(self) -> dict:
        """The learner's complete state as plain data (numbers, strings, lists, dicts).

        No list directly holds another list (matrices are stored flat): FerretDB v1, a
        MongoDB-wire server streamlog supports, rejects documents with nested arrays."""
        return {
            "kind": type(self).__name__,
            "version": STATE_VERSION,
            "config": self._config(),
            "n_seen": self.n_seen_,
            "n_skipped": self.n_skipped_,
            "seq": self.seq_,
            "holes": [bound for hole in self._holes for bound in hole],  # flat: lo, hi, lo, hi …
            "model": self._model_state(),
        }

    def load(self, state: dict) -> "Learner":
        """Restore a state made by :meth:`state` (or saved as a checkpoint)."""
        if not isinstance(state, dict) or state.get("kind") != type(self).__name__:
            kind = state.get("kind") if isinstance(state, dict) else type(state).__name__
            raise ConsumerError(f"{self.name}: cannot load a {kind} state into a {type(self).__name__}")
        if state.get("version") != STATE_VERSION:
            raise ConsumerError(f"{self.name}: state version {state.get('version')!r} is not supported")
        mine, theirs = self.checkpoint_config(), state.get("config")
        if mine != theirs:
            raise ConsumerError(
                f"{self.name}: the saved state was made with {theirs}, this learner has {mine}; "
                "give this learner another name= to start a new model")
        self._load_model_state(state["model"])
        self.n_seen_ = int(state.get("n_seen", 0))
        self.n_skipped_ = int(state.get("n_skipped", 0))
        self.seq_ = None if state.get("seq") is None else int(state["seq"])
        flat = state.get("holes") or []
        self._holes = [[int(flat[i]), int(flat[i + 1])] for i in range(0, len(flat) - 1, 2)]
        return self

    def checkpoint_config(self) -> dict:
        """The settings this learner's checkpoints are saved with (their ``config``), as
        they read back from the store (tuples as lists): a checkpoint loads into this
        learner only if its ``config`` equals this."""
        return _plain(self._config())

    def reset(self) -> "Learner":
        """Forget everything learned (the checkpoints in the store stay)."""
        self._reset_model()
        self.n_seen_ = 0
        self.n_skipped_ = 0
        self.seq_ = None
        self._holes = []
        return self

    # -- the consumer ---------------------------------------------------------------

    def attach(self, stream, group: str) -> None:
        """Bind to ``(stream, group)`` and resume from the newest checkpoint saved there.

        The streaming runtime calls this when the consumer starts, right after the group is
        created and before any window is claimed; without it the first window binds. Binding
        again to the same stream and group does nothing; another one is an error (one
        instance learns one model: use another instance)."""
        self._bind(stream, group)

    def __call__(self, window) -> dict | None:
        """Learn from one window (see the module docstring); return a record for ``sink=``."""
        self._bind(window.stream, window.group)
        if self._dirty:
            self._rollback(window)
        seq = window.seq
        if self._learned(seq):
            # Learned before (a retry after the sink failed, or a redelivery after a crash
            # between checkpoint and commit): not again, but the sink gets its record again.
            return self.record(window) if window.data else None
        if not window.data:  # e.g. an empty time window: nothing to learn, nothing to save
            self._mark(seq)
            return None
        summary = None
        try:
            X, y = self._window_arrays(window)
            self._learn_arrays(X, y)
            self._mark(seq)
            if self.checkpoint and self._deferred:
                self._unsaved = True
            elif self.checkpoint:
                summary = self._save()
        except BaseException:
            self._dirty = self.checkpoint
            raise
        self.windows_ += 1
        return self.record(window, summary)

    def _save(self) -> dict | None:
        """Save the checkpoint (bound by now); returns the summary made for its history point."""
        assert self._key is not None
        self._check_checkpoint()
        summary = self._fitted_summary()  # once, for the history point and the record
        # keyed by the newest window in the state: a late window (a hole) rewrites that
        # version, so the newest checkpoint always holds everything learned
        self._stream.save_model(self.name, self._key[1], self.seq_, self.state(), point=self.history_point(summary))
        self._unsaved = False
        return summary

    def defer_checkpoints(self, deferred: bool) -> None:
        """The runtime's ``windows_per_claim``: while deferred, the checkpoint is saved by
        :meth:`flush_checkpoint` once per claim (after its last window, before its commit)
        instead of after every window. Ending it with windows unsaved (their claim was never
        committed) rolls the model back to the last checkpoint before the next window."""
        self._deferred = deferred
        self._dirty = self._dirty or (not deferred and self._unsaved)

    def flush_checkpoint(self) -> None:
        """Save the windows learned since the last checkpoint (none: nothing to do); on a
        failure the model rolls back to the last checkpoint before the next window."""
        if self._unsaved:
            try:
                self._save()
            except BaseException:
                self._dirty = True
                raise

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise not_fitted_error()(self._not_fitted_message())

    def _not_fitted_message(self) -> str:
        return f"{self.name} is not fitted yet: it has learned no items, so it cannot predict"

    def _window_arrays(self, window):
        return self._arrays(window.data)

    def record(self, window, summary: dict | None = None) -> dict:
        """What the learner forwards to ``sink=`` after learning ``window``: the window's
        fields and the model's ``n_seen`` and summary (``summary``: that summary, already
        made). Sent again for a window already learned (see the module docstring); when
        newer windows were learned since, the record says so with ``"model_seq"`` (the
        newest window in the model it describes)."""
        record = {
            "model": self.name,
            "seq": window.seq,
            "first_offset": window.offsets[0],
            "last_offset": window.offsets[-1],
            "items": len(window),
            "time": window.end,
            "n_seen": self.n_seen_,
        }
        record.update(self.summary() if summary is None else summary)
        if self.seq_ is not None and window.seq < self.seq_:
            record["model_seq"] = self.seq_
        return record

    def _bind(self, stream, group: str) -> None:
        """Bind to ``(stream, group)`` once, resuming from its newest checkpoint (shared by
        :meth:`attach` and the first window)."""
        key = (stream.name, group)
        if self._key is not None:
            if key != self._key:
                raise ConsumerError(
                    f"{self.name} is bound to stream {self._key[0]!r}, group {self._key[1]!r}; "
                    f"use another instance for stream {key[0]!r}, group {key[1]!r}")
            return
        saved = stream.model(self.name, group) if self.checkpoint else None
        if saved is not None:
            if self.n_seen_ or self.seq_ is not None:
                raise ConsumerError(
                    f"{self.name} has already learned {self.n_seen_} items, and stream {key[0]!r} group "
                    f"{key[1]!r} has a checkpoint of model {self.name!r} (window #{saved['seq']}): use a "
                    "fresh instance to resume from it, or another name= for a new model")
            self.load(saved["state"])
            self.seq_ = int(saved["seq"])
        elif self.checkpoint:
            self._initial = self.state()
        self._key, self._stream = key, stream
        _threads.cap(self.threads)

    def _rollback(self, window) -> None:
        """Undo a failed window: back to the last checkpoint (or the state at binding)."""
        saved = window.stream.model(self.name, window.group) if self.checkpoint else None
        if saved is not None:
            self.reset()
            self.load(saved["state"])
            self.seq_ = int(saved["seq"])
        elif self._initial is not None:
            self.reset()
            self.load(self._initial)
        self._dirty = self._unsaved = False

    # -- which windows are in the state (:mod:`~streamlog.learners.seen`) -----------

    def _learned(self, seq: int) -> bool:
        return is_learned(seq, self.seq_, self._holes)

    def _mark(self, seq: int) -> None:
        self.seq_ = mark_learned(seq, self.seq_, self._holes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, features={self.features!r}, n_seen_={self.n_seen_})"


def _plain(value: Any) -> Any:
    """``value`` as it comes back from a checkpoint (tuples → lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
