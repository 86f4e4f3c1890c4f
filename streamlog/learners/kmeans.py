"""Streaming k-means with forgetting: :class:`OnlineKMeans`."""

from __future__ import annotations

import numpy as np

from ..errors import ConsumerError
from .base import Learner
from .regression import check_halflife

#: a cluster whose weight falls below this fraction of the largest one's is "dying" (Spark's value)
DYING = 1e-8
#: Lloyd iterations on the first points, to start from good centres
INIT_ITERATIONS = 20


def _sq_distances(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    diff = X[:, None, :] - centers[None, :, :]
    return np.einsum("ijk,ijk->ij", diff, diff)


class OnlineKMeans(Learner):
    """Mini-batch k-means over windows, with optional forgetting (Spark's StreamingKMeans).

    Start: points are buffered until at least ``k`` have arrived; then the centres
    are seeded with k-means++ (scikit-learn's ``kmeans_plusplus``, ``random_state=seed``)
    and refined by Lloyd iterations on those first points.

    Update, per window (Spark's rule): each point goes to its nearest centre; a centre
    with weight ``w`` that receives ``m`` points with mean ``x̄`` becomes
    ``(w·d·c + m·x̄) / (w·d + m)`` and its weight ``w·d + m``, where the discount
    ``d = 0.5 ** (n / halflife)`` for a window of ``n`` items (``d = 1`` without
    ``halflife``: every centre is then the exact mean of every point ever assigned
    to it). With forgetting, a centre that stops receiving points loses weight; once
    its weight is below ``1e-8`` of the largest centre's, it is "dying" and, as in
    Spark, the largest cluster is split in two to replace it (both halves share the
    weight and start a hair apart, then separate as new points arrive).

    ``centers_`` (``k x d`` array, None until initialised), ``counts_`` (centre
    weights), ``predict(...)`` (nearest centre; :class:`~streamlog.learners.base.NotFittedError`
    until the centres exist), ``inertia_`` (prequential mean squared distance of new
    points to their nearest centre, before learning them).
    """

    def __init__(self, k: int, features, halflife: float | None = None, seed: int | None = 0, *,
                 name: str | None = None, checkpoint: bool = True, threads: int | None = 1):
        super().__init__(features, None, name=name, checkpoint=checkpoint, threads=threads)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConsumerError(f"k must be a positive integer, not {k!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConsumerError(f"seed must be an integer or None, not {seed!r}")
        self.k = k
        self.halflife = check_halflife(halflife)
        self.seed = seed
        self._reset_model()

    def _reset_model(self) -> None:
        self.centers_: np.ndarray | None = None
        self.counts_: np.ndarray | None = None
        self._buffer: list[np.ndarray] = []
        self.splits_ = 0
        self.n_scored_ = 0
        self._sse = 0.0
        self.window_inertia_: float | None = None
        self._scored: tuple[np.ndarray, np.ndarray] | None = None  # (window, its nearest centres)
        self._ks = np.arange(self.k)[None, :]
        self._arange = np.arange(0)

    def _config(self) -> dict:
        return {"features": self.features, "k": self.k}

    @property
    def fitted(self) -> bool:
        return self.centers_ is not None

    # -- learning -------------------------------------------------------------------

    def _fit(self, X: np.ndarray, y=None) -> None:
        if self.centers_ is None:
            self._buffer.append(X)
            if sum(len(b) for b in self._buffer) >= self.k:
                self._initialise(np.vstack(self._buffer))
                self._buffer = []
            return
        self._update(X)

    def _initialise(self, X: np.ndarray) -> None:
        from sklearn.cluster import kmeans_plusplus

        centers, _ = kmeans_plusplus(X, self.k, random_state=self.seed)
        centers = centers.astype(float)
        labels = None
        for _ in range(INIT_ITERATIONS):
            new = _sq_distances(X, centers).argmin(axis=1)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            for j in range(self.k):
                members = X[labels == j]
                if len(members):
                    centers[j] = members.mean(axis=0)
        self.centers_ = centers
        self.counts_ = np.bincount(labels, minlength=self.k).astype(float)
        self._split_dying()

    def _update(self, X: np.ndarray) -> None:
        scored, self._scored = self._scored, None
        # the nearest centres of this window, as scoring found them (the same centres): once
        labels = scored[1] if scored is not None and scored[0] is X else _sq_distances(X, self.centers_).argmin(axis=1)
        onehot = (labels[:, None] == self._ks).astype(float)
        counts = np.add.reduce(onehot, 0)
        sums = onehot.T @ X
        weights = counts + (self.counts_ if self.halflife is None else self.counts_ * 0.5 ** (len(X) / self.halflife))
        lam = (counts / np.maximum(weights, 1e-16))[:, None]
        means = sums / np.maximum(counts, 1.0)[:, None]
        self.centers_ = self.centers_ * (1.0 - lam) + means * lam
        self.counts_ = weights
        self._split_dying()

    def _split_dying(self) -> None:
        if self.k < 2:
            return
        counts = self.counts_
        if counts.min() >= DYING * counts.max():
            return  # the common case: no centre is dying
        largest, smallest = int(counts.argmax()), int(counts.argmin())
        top, low = counts[largest], counts[smallest]
        if low < DYING * top:
            weight = (top + low) / 2.0
            self.counts_[largest] = self.counts_[smallest] = weight
            center = self.centers_[largest]
            nudge = 1e-14 * np.maximum(np.abs(center), 1.0)
            self.centers_[smallest] = center - nudge
            self.centers_[largest] = center + nudge
            self.splits_ += 1

    # -- prediction -----------------------------------------------------------------

    def _not_fitted_message(self) -> str:
        return (f"{self.name} is not fitted yet: no centres yet ({self.n_seen_} of the first {self.k} "
                "points seen)")

    def _infer(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return _sq_distances(X, self.centers_).argmin(axis=1)

    def _score(self, X: np.ndarray, y=None) -> None:
        d2 = _sq_distances(X, self.centers_)
        labels = d2.argmin(axis=1)
        self._scored = (X, labels)  # the window's learning step takes its labels from here
        total = float(d2[self._rows(len(X)), labels].sum())
        self._sse += total
        self.n_scored_ += len(X)
        self.window_inertia_ = total / len(X)

    def _rows(self, n: int) -> np.ndarray:
        if len(self._arange) < n:
            self._arange = np.arange(max(n, 2 * len(self._arange)))
        return self._arange[:n]

    @property
    def inertia_(self) -> float | None:
        """Prequential mean squared distance of each new point to its nearest centre."""
        return self._sse / self.n_scored_ if self.n_scored_ else None

    def transform(self, data) -> np.ndarray:
        """Distances of each row to every centre (``n x k``)."""
        X, _ = self._arrays(data, need_target=False)
        self._check_fitted()
        return np.sqrt(_sq_distances(X, self.centers_))

    def predictions(self, X: np.ndarray) -> list[dict]:
        """The nearest centre of each row of ``X`` and the distance to it:
        ``{"cluster": i, "distance": d}``."""
        distances = self.transform(X)
        clusters = distances.argmin(axis=1)
        nearest = distances[np.arange(len(X)), clusters]
        return [{"cluster": c, "distance": d} for c, d in zip(clusters.tolist(), nearest.tolist(), strict=False)]

    # -- state -----------------------------------------------------------------------

    @classmethod
    def configured_from(cls, config: dict, model: dict, *, name: str,
                        template: Learner | None = None) -> "OnlineKMeans":
        return cls(config["k"], config["features"], halflife=model.get("halflife"), seed=model.get("seed", 0),
                   name=name, checkpoint=False, threads=None)

    def _model_state(self) -> dict:
        buffered = np.vstack(self._buffer).ravel().tolist() if self._buffer else []
        return {  # matrices flat, row by row (no nested arrays: see Learner.state)
            "centers": None if self.centers_ is None else self.centers_.ravel().tolist(),
            "counts": None if self.counts_ is None else self.counts_.tolist(),
            "buffer": buffered,
            "halflife": self.halflife,
            "seed": self.seed,
            "splits": self.splits_,
            "n_scored": self.n_scored_,
            "sse": self._sse,
            "window_inertia": self.window_inertia_,
        }

    def _load_model_state(self, state: dict) -> None:
        d = len(self.features)
        centers = state.get("centers")
        if centers is not None:
            centers = np.asarray(centers, dtype=float)
            if centers.size != self.k * d:
                raise ConsumerError(f"{self.name}: saved centres have {centers.size} numbers, expected {self.k * d}")
            self.centers_ = centers.reshape(self.k, d)
            self.counts_ = np.asarray(state["counts"], dtype=float)
        else:
            self.centers_ = self.counts_ = None
        buffered = state.get("buffer") or []
        self._buffer = [np.asarray(buffered, dtype=float).reshape(-1, d)] if buffered else []
        self.splits_ = int(state.get("splits", 0))
        self.n_scored_ = int(state.get("n_scored", 0))
        self._sse = float(state.get("sse", 0.0))
        self.window_inertia_ = state.get("window_inertia")

    def summary(self) -> dict:
        out = {  # one dict per centre, keyed by feature (readable, and no nested arrays)
            "centers": None if self.centers_ is None
            else [dict(zip(self.features, c, strict=False)) for c in self.centers_.tolist()],
            "counts": None if self.counts_ is None else self.counts_.tolist(),
            "inertia": self.inertia_,
            "window_inertia": self.window_inertia_,
        }
        if self.splits_:
            out["splits"] = self.splits_
        return out

    def __repr__(self) -> str:
        state = "not initialised" if self.centers_ is None else f"{self.k} centres"
        return f"OnlineKMeans(k={self.k}, features={self.features!r}, {state}, n_seen_={self.n_seen_})"

