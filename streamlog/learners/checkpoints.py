"""Learners rebuilt from their checkpoints in the store: the one way to do it.

A learner consuming a stream in a group checkpoints its state under ``(stream, group,
name)`` after each window. :func:`rebuild` turns one such state back into a learner;
:func:`load_newest` and :func:`load_latest` read the newest checkpoint and rebuild it;
:func:`latest_version` tells cheaply whether a newer one landed. Predict stages
(:class:`~.predictor.Predictor`) and the HTTP model service (:mod:`streamlog.serve.models`)
read models through these functions only.

Guarantees:

* **Checkpoints are data.** The learner's class is looked up in the registry of learner
  kinds (:mod:`.kinds`) by the checkpoint's ``kind``, configured from its plain ``config``
  (:meth:`~.base.Learner.configured_from`), then given its state by the learner's own
  ``load`` (``PartialFit`` through the allow-listed decoder of :mod:`.state_decode`):
  nothing named by the data is imported or run. A ``PartialFit`` checkpoint is decoded
  into an estimator of a class from a fixed, reviewed list of scikit-learn estimators
  built from the checkpoint's plain parameters, or into a copy of a ``PartialFit`` given
  as the template (needed for river models and any other estimator).
* A checkpoint that cannot be rebuilt raises :class:`~streamlog.errors.ConsumerError`
  saying why; nothing is written and no stream is created.
* A rebuilt learner that is fitted has done its lazy work (:meth:`~.base.Learner.prepare_to_predict`):
  predictions from several threads only read it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from ..errors import ConsumerError, UnknownStreamError
from ..items import ms_to_datetime
from ..names import check_name
from .kinds import kind_of_class

if TYPE_CHECKING:  # pragma: no cover
    from ..client import Client
    from .base import Learner


class Loaded(NamedTuple):
    """A learner rebuilt from a checkpoint: the window number it was saved after, and when."""

    learner: "Learner"
    seq: int
    saved_at: datetime


def latest_version(client: "Client", stream: str, group: str, name: str) -> tuple[int, int] | None:
    """``(seq, saved_ms)`` of the newest checkpoint of model ``name``, or None: one cheap read
    (the checkpoints' keys, not their state). A late window a learner fills in rewrites its
    newest version with a new save time, so a change of either means a newer model."""
    try:
        for g, m, seq, saved in client.store.models(stream):
            if g == group and m == name:
                return int(seq), int(saved)
    except UnknownStreamError:
        pass
    return None


def rebuild(state: dict, name: str, template: "Learner | None" = None) -> "Learner":
    """A learner of the checkpoint's kind holding ``state`` (a checkpoint's ``state``),
    named ``name``, neither checkpointing nor capping threads.

    ``template``: a learner to copy the configuration of (required for a ``PartialFit`` of
    an estimator not on the fixed scikit-learn list, e.g. a river model); it must be of the
    checkpoint's kind and configured as the checkpoint was saved; its own state is left
    alone. Raises :class:`ConsumerError` for a checkpoint that cannot be loaded."""
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        raise ConsumerError(f"the checkpoint of model {name!r} is not a learner state")
    kind_name, config, saved = state.get("kind"), state["config"], state.get("model") or {}
    if template is not None and kind_name != type(template).__name__:
        raise ConsumerError(f"the checkpoint of model {name!r} is a {kind_name}, not a {type(template).__name__}")
    kind = kind_of_class(kind_name)
    if kind is None:
        raise ConsumerError(f"the checkpoint of model {name!r} is of an unknown kind {kind_name!r}")
    try:
        learner = kind.learner_class().configured_from(config, saved, name=name, template=template)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConsumerError(f"the checkpoint of model {name!r} is malformed: {type(exc).__name__}: {exc}") from None
    learner.load(state)  # checks kind, version and configuration; decodes PartialFit from the allow-list
    if template is not None and template.checkpoint_config() != learner.checkpoint_config():
        raise ConsumerError(f"{name}: the saved state was made with {state['config']}, the given "
                            f"{type(template).__name__} has {template.checkpoint_config()}")
    if learner.fitted:
        learner.prepare_to_predict()
    return learner


def load_newest(client: "Client", stream: str, group: str, name: str,
                template: "Learner | None" = None) -> tuple["Learner", int, int] | None:
    """The newest checkpoint of model ``name`` rebuilt (see :func:`rebuild`), with its window
    number (also the learner's ``seq_``) and save time in ms; None when there is none.
    Names are not checked (see :func:`load_latest`)."""
    found = client.store.load_model(stream, group, name)
    if found is None:
        return None
    seq, saved, state = found
    learner = rebuild(state, name, template)
    learner.seq_ = int(seq)
    return learner, int(seq), int(saved)


def load_latest(client: "Client", stream: str, group: str = "default", name: str | None = None,
                model: "Learner | None" = None) -> Loaded | None:
    """The newest checkpoint of model ``name`` (default: ``model.name``) saved by a learner
    consuming ``stream`` in ``group``, rebuilt as a learner; None when it never saved one.

    Two reads at most, nothing written, no stream created. The learner can ``predict``
    (and, for k-means, ``transform``) once ``learner.fitted``. ``model`` is the template of
    :func:`rebuild`. Raises :class:`ConsumerError` when the checkpoint cannot be loaded.
    """
    check_name(stream)
    check_name(group, "group")
    if name is None:
        if model is None:
            raise ConsumerError("give the model's name= (or a learner as model=)")
        name = model.name
    check_name(name, "model")
    found = load_newest(client, stream, group, name, model)
    if found is None:
        return None
    learner, seq, saved = found
    return Loaded(learner, seq, ms_to_datetime(saved))


__all__ = ["Loaded", "latest_version", "rebuild", "load_newest", "load_latest"]
