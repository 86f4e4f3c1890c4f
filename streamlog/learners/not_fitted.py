"""``NotFittedError``: raised by ``predict`` (or ``transform``) on a learner that has
learned nothing yet; made on first use (:func:`not_fitted_error`)."""

from __future__ import annotations

from ..errors import ConsumerError

_NotFittedError: type | None = None


def not_fitted_error() -> type:
    """:class:`NotFittedError`, made on first use: importing scikit-learn takes over half a
    second, which a learner module should not cost on import."""
    global _NotFittedError
    if _NotFittedError is None:
        from sklearn.exceptions import NotFittedError as SklearnNotFittedError

        class NotFittedError(ConsumerError, SklearnNotFittedError):
            """``predict`` (or ``transform``) on a learner that has not learned enough yet.

            Both a :class:`~streamlog.errors.ConsumerError` and scikit-learn's
            ``sklearn.exceptions.NotFittedError`` (so also a ``ValueError`` and an
            ``AttributeError``): ``except NotFittedError`` works as with any estimator."""

        NotFittedError.__module__ = "streamlog.learners.base"
        NotFittedError.__qualname__ = "NotFittedError"
        _NotFittedError = NotFittedError
    return _NotFittedError
