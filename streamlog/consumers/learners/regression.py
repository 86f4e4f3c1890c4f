"""Exact streaming least squares: :class:`OnlineLinearRegression`."""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import lapack

from ...errors import ConsumerError
from .base import Learner
from .metrics import RunningError

_EPS = np.finfo(float).eps


def check_halflife(halflife) -> float | None:
    if halflife is None:
        return None
    if isinstance(halflife, bool) or not isinstance(halflife, (int, float)) or not halflife > 0 \
            or not math.isfinite(halflife):
        raise ConsumerError(f"halflife must be a positive number of items or None, not {halflife!r}")
    return float(halflife)


class OnlineLinearRegression(Learner):
    """Linear least squares that learns window by window, exactly.

    With ``halflife=None``, after every window ``coef_`` and ``intercept_`` equal batch
    least squares on every item seen so far (``numpy.linalg.lstsq`` on all of them,
    to rounding). With ``halflife=h`` an item's weight halves for every ``h`` items that
    arrive after it, so the model tracks a drifting relationship: the result equals
    weighted least squares with weights ``0.5 ** (age / h)``.

    How: the learner keeps the ``R`` factor of a QR decomposition of the (weighted)
    augmented design matrix ``[X 1 y]``, a ``(p+2) x (p+2)`` triangle, and updates it with
    one Householder QR of ``[sqrt(decay) R; new rows]`` per window (LAPACK ``dgeqrf``).
    The condition number is never squared, as it is with accumulated normal equations,
    and the state is small and fixed-size whatever the stream length. Coefficients
    come from a triangular solve (minimum-norm least squares while the design is
    rank-deficient, e.g. before ``p`` distinct items have been seen).

    Prequential evaluation: each window is predicted before it is learned; ``rmse_``,
    ``mae_`` (over every predicted item) and ``error_`` (with the latest window's RMSE)
    follow the error.

    Attributes: ``coef_`` (in ``features`` order), ``intercept_``, ``rmse_``, ``mae_``,
    ``error_``, ``rss_`` (residual sum of squares of the fit), ``weight_`` (total item
    weight: ``n_seen_`` without forgetting), ``n_seen_``, ``n_skipped_``.

    ``learner(window)`` is a consumer for :func:`streamlog.streaming` that checkpoints its
    state per window under ``(stream, group, name)`` and resumes from it (see
    :class:`~streamlog.consumers.learners.base.Learner`).
    """

    needs_target = True

    def __init__(self, features, target: str, fit_intercept: bool = True, halflife: float | None = None, *,
                 name: str | None = None, checkpoint: bool = True, threads: int | None = 1):
        super().__init__(features, target, name=name, checkpoint=checkpoint, threads=threads)
        self.fit_intercept = bool(fit_intercept)
        self.halflife = check_halflife(halflife)
        self._p = len(self.features) + self.fit_intercept  # design columns
        self._size = self._p + 1  # plus the target column
        self._lwork = max(64 * self._size, 1)
        self._below = np.tril_indices(self._size, -1)
        self._reset_model()

    def _reset_model(self) -> None:
        self._R = np.zeros((self._size, self._size))
        self._solution: np.ndarray | None = None
        self.weight_ = 0.0
        self.error_ = RunningError()

    def _config(self) -> dict:
        return {"features": self.features, "target": self.target, "fit_intercept": self.fit_intercept}

    # -- learning -------------------------------------------------------------------

    @property
    def fitted(self) -> bool:
        return self.n_seen_ > 0

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        n, size, nf = len(X), self._size, len(self.features)
        A = np.empty((size + n, size), order="F")
        A[size:, :nf] = X
        if self.fit_intercept:
            A[size:, nf] = 1.0
        A[size:, -1] = y
        if self.halflife is None:
            A[:size] = self._R
            self.weight_ += n
        else:
            # item weights 0.5 ** (age / h): rows scale by the square root
            A[:size] = self._R * 0.5 ** (n / (2 * self.halflife))
            root = 0.5 ** (np.arange(n - 1, -1, -1) / (2 * self.halflife))
            A[size:] *= root[:, None]
            self.weight_ = self.weight_ * 0.5 ** (n / self.halflife) + float(root @ root)
        qr, _tau, _work, info = lapack.dgeqrf(A, lwork=self._lwork, overwrite_a=1)
        if info != 0:  # pragma: no cover - LAPACK argument error
            raise ConsumerError(f"{self.name}: QR update failed (LAPACK info {info})")
        R = qr[:size]
        R[self._below] = 0.0  # drop the Householder vectors stored under the diagonal
        self._R = np.ascontiguousarray(R)
        self._solution = None

    def _solve(self) -> np.ndarray:
        if self._solution is None:
            p = self._p
            R, z = self._R[:p, :p], self._R[:p, p]
            d = np.abs(np.diag(R))
            top = d.max() if p else 0.0
            if top == 0.0:
                solution = np.zeros(p)
            elif d.min() > top * _EPS * max(p, 8) * 16:
                solution, info = lapack.dtrtrs(R, z)
                if info != 0:  # pragma: no cover - singular despite the check
                    solution = np.linalg.lstsq(R, z, rcond=None)[0]
            else:  # rank-deficient so far: the minimum-norm least-squares solution
                solution = np.linalg.lstsq(R, z, rcond=None)[0]
            self._solution = solution
        return self._solution

    @property
    def coef_(self) -> np.ndarray:
        """Feature coefficients, in ``features`` order."""
        return self._solve()[:len(self.features)].copy()

    @property
    def intercept_(self) -> float:
        return float(self._solve()[-1]) if self.fit_intercept else 0.0

    @property
    def rss_(self) -> float:
        """(Weighted) residual sum of squares of the current fit on the items learned."""
        return float(self._R[-1, -1] ** 2)

    @property
    def rmse_(self) -> float | None:
        """Prequential RMSE over every item predicted before it was learned."""
        return self.error_.rmse

    @property
    def mae_(self) -> float | None:
        return self.error_.mae

    def _infer(self, X: np.ndarray) -> np.ndarray:
        solution = self._solve()
        nf = len(self.features)
        out = X @ solution[:nf]
        if self.fit_intercept:
            out += solution[nf]
        return out

    def _score(self, X: np.ndarray, y: np.ndarray) -> None:
        self.error_.update(y, self._infer(X))

    # -- state -----------------------------------------------------------------------

    def _model_state(self) -> dict:
        return {"R": self._R.ravel().tolist(), "weight": self.weight_, "halflife": self.halflife,
                "error": self.error_.state()}

    def _load_model_state(self, state: dict) -> None:
        R = np.asarray(state["R"], dtype=float)
        if R.size != self._size ** 2:
            raise ConsumerError(f"{self.name}: saved R has {R.size} numbers, expected {self._size ** 2}")
        self._R = R.reshape(self._size, self._size)
        self._solution = None
        self.weight_ = float(state.get("weight", 0.0))
        self.error_ = RunningError()
        self.error_.load(state.get("error") or {})

    def summary(self) -> dict:
        coef = self.coef_
        out = {"coef": {f: float(c) for f, c in zip(self.features, coef)}}
        if self.fit_intercept:
            out["intercept"] = self.intercept_
        out.update(self.error_.summary())
        return out

    def __repr__(self) -> str:
        coef = ", ".join(f"{f}={c:.4g}" for f, c in zip(self.features, self.coef_))
        extra = f", intercept={self.intercept_:.4g}" if self.fit_intercept else ""
        return f"OnlineLinearRegression({self.target} ~ {coef}{extra}, n_seen_={self.n_seen_})"
