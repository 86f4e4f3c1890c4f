"""Exact streaming least squares: :class:`OnlineLinearRegression`."""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import lapack

from ..errors import ConsumerError
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

    Warm-up: predictions come from ``coef_`` and ``intercept_`` once the fit is
    determined — its design has full rank and at least twice as many items as
    coefficients (with the intercept) have been learned. Before that a least-squares fit
    interpolates the noise of its first few items (or, rank-deficient, picks the
    minimum-norm solution in the features' own units, which an unscaled feature such as
    an ordinal date dominates), and its predictions for the next items can be off by
    thousands of times the target's spread. So until then ``predict`` returns the
    (weighted) mean of the targets seen so far, and, should the design stay
    rank-deficient past that point, the minimum-norm solution in centred and
    standardized coordinates around that mean. ``coef_``/``intercept_`` are always the
    exact least-squares solution; ``warming_up_`` tells which rule predicts.

    Prequential evaluation: each window is predicted before it is learned; ``rmse_``,
    ``mae_`` (over every predicted item) and ``error_`` (with the latest window's RMSE)
    follow the error. ``predict`` before anything was learned raises
    :class:`~streamlog.learners.base.NotFittedError`.

    Attributes: ``coef_`` (in ``features`` order), ``intercept_``, ``rmse_``, ``mae_``,
    ``error_``, ``rss_`` (residual sum of squares of the fit), ``weight_`` (total item
    weight: ``n_seen_`` without forgetting), ``n_seen_``, ``n_skipped_``.

    ``learner(window)`` is a consumer for :func:`streamlog.streaming` that checkpoints its
    state per window under ``(stream, group, name)`` and resumes from it (see
    :class:`~streamlog.learners.base.Learner`).
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
        self._full_rank = False
        self._ysum: float | None = 0.0  # (weighted) sum of the targets, for the warm-up mean
        self._warm = False  # predictions come from the exact fit (sticky once reached)
        self._warmup: tuple[np.ndarray, float] | None = None
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
            if self._ysum is not None:
                self._ysum += float(y.sum())
        else:
            # item weights 0.5 ** (age / h): rows scale by the square root
            A[:size] = self._R * 0.5 ** (n / (2 * self.halflife))
            root = 0.5 ** (np.arange(n - 1, -1, -1) / (2 * self.halflife))
            A[size:] *= root[:, None]
            decay = 0.5 ** (n / self.halflife)
            self.weight_ = self.weight_ * decay + float(root @ root)
            if self._ysum is not None:
                self._ysum = self._ysum * decay + float((root * root) @ y)
        qr, _tau, _work, info = lapack.dgeqrf(A, lwork=self._lwork, overwrite_a=1)
        if info != 0:  # pragma: no cover - LAPACK argument error
            raise ConsumerError(f"{self.name}: QR update failed (LAPACK info {info})")
        R = qr[:size]
        R[self._below] = 0.0  # drop the Householder vectors stored under the diagonal
        self._R = np.ascontiguousarray(R)
        self._solution = None
        self._warmup = None

    def _solve(self) -> np.ndarray:
        if self._solution is None:
            p = self._p
            R, z = self._R[:p, :p], self._R[:p, p]
            d = np.abs(np.diag(R))
            top = d.max() if p else 0.0
            full = False
            if top == 0.0:
                solution = np.zeros(p)
            elif d.min() > top * _EPS * max(p, 8) * 16:
                solution, info = lapack.dtrtrs(R, z)
                full = info == 0
                if not full:  # pragma: no cover - singular despite the check
                    solution = np.linalg.lstsq(R, z, rcond=None)[0]
            else:  # rank-deficient so far: the minimum-norm least-squares solution
                solution = np.linalg.lstsq(R, z, rcond=None)[0]
            self._solution = solution
            self._full_rank = full
        return self._solution

    # -- warm-up ----------------------------------------------------------------------

    @property
    def warming_up_(self) -> bool:
        """True while predictions come from the warm-up rule rather than ``coef_``/``intercept_``:
        fewer than twice as many items as coefficients learned, or a rank-deficient design."""
        if not self._warm:
            self._solve()
            # sticky: the rank of a design only grows, and forgetting never zeroes a weight
            self._warm = self._full_rank and (self.n_seen_ >= 2 * self._p or self._ysum is None)
        return not self._warm

    def _warmup_solution(self) -> tuple[np.ndarray, float]:
        """Coefficients and intercept that predict while warming up (see the class docstring)."""
        if self._warmup is None:
            if self.n_seen_ >= 2 * self._p or self._ysum is None:
                # enough items but a rank-deficient design (or an old checkpoint without the
                # sum of the targets: the mean comes from R, with an intercept)
                mean_y = self._ysum / self.weight_ if self._ysum is not None and self.weight_ > 0 else 0.0
                self._warmup = self._standardized_min_norm(mean_y)
            else:
                self._warmup = np.zeros(len(self.features)), self._ysum / self.weight_
        return self._warmup

    def _standardized_min_norm(self, mean_y: float) -> tuple[np.ndarray, float]:
        """The minimum-norm least-squares fit in centred, standardized coordinates (from ``R``)."""
        nf = len(self.features)
        mean_x = np.zeros(nf)
        if self.fit_intercept:
            # R of [1 X y] (intercept first): its first row holds the (weighted) sums, and the
            # rest is the R factor of the centred [X y], exactly (no sums of squares subtracted)
            order = [nf] + list(range(nf)) + [nf + 1]
            Rp = np.linalg.qr(self._R[:, order], mode="r")
            if Rp[0, 0] != 0.0:
                mean_x, mean_y = Rp[0, 1:nf + 1] / Rp[0, 0], float(Rp[0, -1] / Rp[0, 0])
            C = Rp[1:, 1:]
        else:
            C = self._R
        X, z = C[:, :nf], C[:, nf]
        scale = np.sqrt(np.einsum("ij,ij->j", X, X))  # sqrt(weight) times the standard deviation
        raw = np.sqrt(np.einsum("ij,ij->j", self._R[:, :nf], self._R[:, :nf]))
        varying = scale > 1e-9 * raw  # a constant column (to rounding) gets no coefficient
        coef = np.zeros(nf)
        if varying.any():
            Z = X[:, varying] / scale[varying]
            coef[varying] = np.linalg.lstsq(Z, z, rcond=None)[0] / scale[varying]
        return coef, float(mean_y - mean_x @ coef) if self.fit_intercept else 0.0

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
        if self.warming_up_:
            coef, intercept = self._warmup_solution()
            return X @ coef + intercept
        solution = self._solve()
        nf = len(self.features)
        out = X @ solution[:nf]
        if self.fit_intercept:
            out += solution[nf]
        return out

    def _score(self, X: np.ndarray, y: np.ndarray) -> None:
        self.error_.update(y, self._infer(X))

    def prepare_to_predict(self) -> None:
        """Solve now, and decide whether the warm-up rule predicts (see ``warming_up_``)."""
        self.warming_up_  # noqa: B018 - the property solves and caches: read for its effect

    # -- state -----------------------------------------------------------------------

    @classmethod
    def configured_from(cls, config: dict, model: dict, *, name: str,
                        template: Learner | None = None) -> "OnlineLinearRegression":
        return cls(config["features"], config["target"], fit_intercept=config.get("fit_intercept", True),
                   halflife=model.get("halflife"), name=name, checkpoint=False, threads=None)

    def _model_state(self) -> dict:
        return {"R": self._R.ravel().tolist(), "weight": self.weight_, "ysum": self._ysum,
                "halflife": self.halflife, "error": self.error_.state()}

    def _load_model_state(self, state: dict) -> None:
        R = np.asarray(state["R"], dtype=float)
        if R.size != self._size ** 2:
            raise ConsumerError(f"{self.name}: saved R has {R.size} numbers, expected {self._size ** 2}")
        self._R = R.reshape(self._size, self._size)
        self._solution = None
        self._warm = False
        self._warmup = None
        self.weight_ = float(state.get("weight", 0.0))
        ysum = state.get("ysum")  # absent from checkpoints made before the warm-up rule
        self._ysum = None if ysum is None else float(ysum)
        self.error_ = RunningError()
        self.error_.load(state.get("error") or {})

    def summary(self) -> dict:
        coef = self.coef_
        out = {"coef": {f: float(c) for f, c in zip(self.features, coef, strict=False)}}
        if self.fit_intercept:
            out["intercept"] = self.intercept_
        out.update(self.error_.summary())
        return out

    def __repr__(self) -> str:
        coef = ", ".join(f"{f}={c:.4g}" for f, c in zip(self.features, self.coef_, strict=False))
        extra = f", intercept={self.intercept_:.4g}" if self.fit_intercept else ""
        return f"OnlineLinearRegression({self.target} ~ {coef}{extra}, n_seen_={self.n_seen_})"
