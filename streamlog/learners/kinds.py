"""The one registry of learner kinds.

A :class:`LearnerKind` ties together the three names of one kind of learner: the short
name pipeline files (``learner = "kmeans"``, ``predict = { model = "kmeans" }``) and
``Predictor(model=…)`` use, the learner class, and that class's name, which is also a
checkpoint's ``kind``. It also says which options a pipeline file must give the learner.
Everything else a kind needs (rebuilding from a checkpoint, the fields of a prediction)
is a method of its class: see :mod:`.checkpoints` and :class:`~.base.Learner`.

This module imports no learner (they need numpy and scipy): a class is imported when
:meth:`LearnerKind.learner_class` is first called, so validating a pipeline file stays
fast and imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from .base import Learner


def _regression() -> type[Learner]:
    from .regression import OnlineLinearRegression

    return OnlineLinearRegression


def _kmeans() -> type[Learner]:
    from .kmeans import OnlineKMeans

    return OnlineKMeans


def _partial_fit() -> type[Learner]:
    from .partial_fit import PartialFit

    return PartialFit


@dataclass(frozen=True)
class LearnerKind:
    """One kind of learner (see the module docstring)."""

    #: the short name of pipeline files and ``Predictor(model=…)``
    name: str
    #: the learner class's name, and the ``kind`` of its checkpoints
    class_name: str
    #: the options a pipeline file's ``params`` must give
    required: tuple[str, ...]
    _load: Callable[[], type[Learner]]

    def learner_class(self) -> type[Learner]:
        """The learner class (imported on the first call)."""
        return self._load()


#: short name → kind, for every learner streamlog has
KINDS: dict[str, LearnerKind] = {kind.name: kind for kind in (
    LearnerKind("regression", "OnlineLinearRegression", ("features", "target"), _regression),
    LearnerKind("kmeans", "OnlineKMeans", ("k", "features"), _kmeans),
    LearnerKind("partial_fit", "PartialFit", ("estimator", "features"), _partial_fit),
)}


def kind_of_class(class_name: Any) -> LearnerKind | None:
    """The kind whose class is named ``class_name`` (a checkpoint's ``kind``: any value,
    it is only compared), or None."""
    return next((kind for kind in KINDS.values() if kind.class_name == class_name), None)


def kind_named(name: str) -> LearnerKind | None:
    """The kind ``name`` stands for, a short name or a class name; None for neither."""
    return KINDS.get(name) or kind_of_class(name)


__all__ = ["LearnerKind", "KINDS", "kind_of_class", "kind_named"]
