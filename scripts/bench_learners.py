"""Benchmark the online learners: items/s and final accuracy on 200,000 streamed items.

    python scripts/bench_learners.py                 # ~2 min on 2 cores; writes the results below
    python scripts/bench_learners.py --items 20000   # a quick look (does not touch the docs)

Every learner gets the same data in the same windows of 60 items: ``Window`` objects
as the streaming runtime builds them (``window.data`` is a list of dicts). The time per
learner covers everything a consumer function would do per window — turning
``window.data`` into what the library takes, learning (the streamlog learners also
score each window before learning it and build their sink record) — best of
``--repeat`` runs. Side by side:

* regression: ``OnlineLinearRegression`` (with and without a checkpoint per window to
  the embedded store), ``PartialFit`` around scikit-learn's ``SGDRegressor`` and river's
  ``LinearRegression``, the same two libraries called directly (``partial_fit`` per
  window; river ``learn_one`` per item, its usual mode), and batch least squares on all
  items as the accuracy limit;
* k-means: ``OnlineKMeans``, ``PartialFit(MiniBatchKMeans)``, scikit-learn's
  ``MiniBatchKMeans.partial_fit`` and river's ``KMeans.learn_one`` directly, and batch
  ``KMeans`` as the limit;
* end to end through the embedded SQLite store: append all items, then
  ``streamlog.streaming(size=60, blocking=False).apply(fn)`` with a no-op function (the
  runtime's own cost), each learner without checkpoints, and with a checkpoint per window.

Accuracy is measured on 20,000 held-out items from the same distribution: RMSE and
the largest coefficient error for regression; mean squared distance to the nearest
centre (inertia) and the adjusted Rand index against the true clusters for k-means.

Writes ``bench-results/learners.json`` and, for the full 200,000 items,
``docs/benchmarks-learners.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from operator import itemgetter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import streamlog  # noqa: E402 - after the sys.path line that makes the checkout importable
from streamlog.consumers import OnlineKMeans, OnlineLinearRegression, PartialFit  # noqa: E402 - after the sys.path line that makes the checkout importable
from streamlog.window import Window  # noqa: E402 - after the sys.path line that makes the checkout importable

WINDOW = 60
COEF = np.array([2.0, -1.0, 0.5, 3.0, -2.0])
INTERCEPT = 0.5
NOISE = 0.5
FEATURES = [f"x{i + 1}" for i in range(len(COEF))]
K, DIM = 5, 3
AXES = ["a", "b", "c"]


# -- data -------------------------------------------------------------------------------------


def regression_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(COEF)))
    y = X @ COEF + INTERCEPT + rng.normal(scale=NOISE, size=n)
    return X, y


def cluster_centers(seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    while True:  # well separated, but not trivially: pairwise distances >= 4 sigma
        centers = rng.uniform(-6, 6, size=(K, DIM))
        d = np.linalg.norm(centers[:, None] - centers[None], axis=2) + np.eye(K) * 99
        if d.min() >= 4.0:
            return centers


def cluster_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    centers = cluster_centers()
    labels = rng.integers(0, K, size=n)
    return centers[labels] + rng.normal(size=(n, DIM)), labels


def windows(stream, rows: list[dict]) -> list[Window]:
    out = []
    for seq, lo in enumerate(range(0, len(rows), WINDOW), start=1):
        chunk = rows[lo:lo + WINDOW]
        out.append(Window(stream, "bench", seq, 1, list(range(lo, lo + len(chunk))), [0] * len(chunk), chunk))
    return out


# -- timing -------------------------------------------------------------------------------------


def timed(make, wins, repeat: int):
    """Best-of-``repeat`` seconds for feeding every window to a fresh consumer from ``make``."""
    best, consumer = None, None
    for rep in range(repeat):
        consumer = make(rep)
        start = time.perf_counter()
        for window in wins:
            consumer(window)
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best, consumer


def rate(items: int, seconds: float, n_windows: int) -> dict:
    return {"seconds": round(seconds, 4), "items_per_s": round(items / seconds),
            "us_per_window": round(seconds / n_windows * 1e6, 1)}


# -- baselines called directly, as consumer functions ----------------------------------------------


class SklearnDirect:
    """``partial_fit`` per window on a numpy array: the library's own cost plus the conversion."""

    def __init__(self, estimator, columns, target=None):
        self.model = estimator
        self.getter = itemgetter(*columns)
        self.target = target

    def __call__(self, window):
        values = np.array(list(map(self.getter, window.data)), dtype=float)
        if self.target:
            self.model.partial_fit(values[:, :-1], values[:, -1])
        else:
            self.model.partial_fit(values)


class RiverDirect:
    """river's usual mode: ``learn_one`` per item, with a dict of the features."""

    def __init__(self, model, features, target=None):
        self.model = model
        self.features = features
        self.target = target

    def __call__(self, window):
        features, learn = self.features, self.model.learn_one
        if self.target:
            target = self.target
            for item in window.data:
                learn({f: item[f] for f in features}, item[target])
        else:
            for item in window.data:
                learn({f: item[f] for f in features})


# -- accuracy ---------------------------------------------------------------------------------------


def regression_accuracy(predict, coef_intercept, X_test, y_test) -> dict:
    pred = np.asarray(predict(X_test), dtype=float)
    out = {"test_rmse": float(np.sqrt(np.mean((y_test - pred) ** 2)))}
    if coef_intercept is not None:
        coef, intercept = coef_intercept
        out["max_coef_error"] = float(np.abs(np.r_[coef, intercept] - np.r_[COEF, INTERCEPT]).max())
    return out


def kmeans_accuracy(centers, X_test, labels_test) -> dict:
    from sklearn.metrics import adjusted_rand_score

    centers = np.asarray(centers, dtype=float)
    d2 = ((X_test[:, None, :] - centers[None]) ** 2).sum(axis=2)
    return {"test_inertia": float(d2.min(axis=1).mean()),
            "ari": float(adjusted_rand_score(labels_test, d2.argmin(axis=1)))}


def river_centers(model) -> np.ndarray:
    return np.array([[c.get(a, 0.0) for a in AXES] for c in model.centers.values()])


# -- the benchmark ----------------------------------------------------------------------------------


def bench_regression(n: int, repeat: int, stream) -> list[dict]:
    from river import linear_model
    from sklearn.linear_model import SGDRegressor

    X, y = regression_data(n, seed=1)
    X_test, y_test = regression_data(20_000, seed=2)
    rows = [dict(zip(FEATURES, x, strict=True), y=t) for x, t in zip(X.tolist(), y.tolist(), strict=True)]
    wins = windows(stream, rows)
    results = []

    def add(name, how, seconds, accuracy, extra=None):
        entry = {"task": "regression", "learner": name, "how": how, **rate(n, seconds, len(wins)), **accuracy}
        entry.update(extra or {})
        results.append(entry)
        print(f"  {name:<44} {entry['items_per_s']:>10,} items/s  test RMSE {entry['test_rmse']:.4f}", flush=True)

    def olr_acc(m):
        return regression_accuracy(lambda Z: m.predict(Z), (m.coef_, m.intercept_), X_test, y_test) | {
            "prequential_rmse": m.rmse_}

    seconds, m = timed(lambda r: OnlineLinearRegression(FEATURES, "y", checkpoint=False), wins, repeat)
    add("streamlog OnlineLinearRegression", "Window → learner (update only)", seconds, olr_acc(m))
    seconds, m = timed(lambda r: OnlineLinearRegression(FEATURES, "y", name=f"olr-{time.time_ns()}"), wins, repeat)
    add("streamlog OnlineLinearRegression + checkpoint", "… and a checkpoint per window (SQLite)", seconds, olr_acc(m))
    seconds, m = timed(lambda r: OnlineLinearRegression(FEATURES, "y", halflife=10_000, checkpoint=False), wins,
                       repeat)
    add("streamlog OnlineLinearRegression halflife=1e4", "Window → learner (update only)", seconds, olr_acc(m))

    def sgd_acc(est, prequential=None):
        out = regression_accuracy(est.predict, (est.coef_, float(np.ravel(est.intercept_)[0])), X_test, y_test)
        return out | ({"prequential_rmse": prequential} if prequential is not None else {})

    seconds, m = timed(lambda r: PartialFit(SGDRegressor(random_state=0), FEATURES, "y", checkpoint=False), wins,
                       repeat)
    add("streamlog PartialFit(SGDRegressor)", "Window → learner (update only)", seconds, sgd_acc(m.estimator, m.rmse_))
    seconds, m = timed(lambda r: SklearnDirect(SGDRegressor(random_state=0), FEATURES + ["y"], "y"), wins, repeat)
    add("scikit-learn SGDRegressor.partial_fit", "per window, called directly", seconds, sgd_acc(m.model))

    def river_acc(model, prequential=None):
        w = model.weights
        out = regression_accuracy(
            lambda Z: np.array([model.predict_one(dict(zip(FEATURES, z, strict=True))) for z in Z.tolist()]),
            (np.array([w.get(f, 0.0) for f in FEATURES]), model.intercept), X_test, y_test)
        return out | ({"prequential_rmse": prequential} if prequential is not None else {})

    seconds, m = timed(lambda r: RiverDirect(linear_model.LinearRegression(), FEATURES, "y"), wins, repeat)
    add("river LinearRegression.learn_one", "per item, called directly", seconds, river_acc(m.model))
    seconds, m = timed(lambda r: PartialFit(linear_model.LinearRegression(), FEATURES, "y", checkpoint=False), wins,
                       repeat)
    add("streamlog PartialFit(river LinearRegression)", "Window → learner (learn_many per window)", seconds,
        river_acc(m.estimator, m.rmse_))

    start = time.perf_counter()
    A = np.c_[X, np.ones(n)]
    solution = np.linalg.lstsq(A, y, rcond=None)[0]
    seconds = time.perf_counter() - start
    add("batch least squares (numpy lstsq), the limit", "all items at once, in memory", seconds,
        regression_accuracy(lambda Z: np.c_[Z, np.ones(len(Z))] @ solution, (solution[:-1], solution[-1]),
                            X_test, y_test))
    return results


def bench_kmeans(n: int, repeat: int, stream) -> list[dict]:
    from river import cluster
    from sklearn.cluster import KMeans, MiniBatchKMeans

    X, labels = cluster_data(n, seed=3)
    X_test, labels_test = cluster_data(20_000, seed=4)
    rows = [dict(zip(AXES, x, strict=True)) for x in X.tolist()]
    wins = windows(stream, rows)
    results = []

    def add(name, how, seconds, accuracy):
        entry = {"task": "kmeans", "learner": name, "how": how, **rate(n, seconds, len(wins)), **accuracy}
        results.append(entry)
        print(f"  {name:<44} {entry['items_per_s']:>10,} items/s  ARI {entry['ari']:.4f}", flush=True)

    seconds, m = timed(lambda r: OnlineKMeans(K, AXES, checkpoint=False), wins, repeat)
    add("streamlog OnlineKMeans", "Window → learner (update only)", seconds,
        kmeans_accuracy(m.centers_, X_test, labels_test))
    seconds, m = timed(lambda r: OnlineKMeans(K, AXES, name=f"okm-{time.time_ns()}"), wins, repeat)
    add("streamlog OnlineKMeans + checkpoint", "… and a checkpoint per window (SQLite)", seconds,
        kmeans_accuracy(m.centers_, X_test, labels_test))
    seconds, m = timed(lambda r: PartialFit(MiniBatchKMeans(K, n_init=1, random_state=0), AXES, checkpoint=False),
                       wins, repeat)
    add("streamlog PartialFit(MiniBatchKMeans)", "Window → learner (update only)", seconds,
        kmeans_accuracy(m.estimator.cluster_centers_, X_test, labels_test))
    seconds, m = timed(lambda r: SklearnDirect(MiniBatchKMeans(K, n_init=1, random_state=0), AXES), wins, repeat)
    add("scikit-learn MiniBatchKMeans.partial_fit", "per window, called directly", seconds,
        kmeans_accuracy(m.model.cluster_centers_, X_test, labels_test))
    seconds, m = timed(lambda r: RiverDirect(cluster.KMeans(n_clusters=K, seed=0), AXES), wins, repeat)
    add("river KMeans.learn_one (defaults)", "per item, called directly", seconds,
        kmeans_accuracy(river_centers(m.model), X_test, labels_test))
    seconds, m = timed(lambda r: RiverDirect(cluster.KMeans(n_clusters=K, halflife=0.01, seed=0), AXES), wins,
                       repeat)
    add("river KMeans.learn_one (halflife=0.01)", "per item, called directly", seconds,
        kmeans_accuracy(river_centers(m.model), X_test, labels_test))

    start = time.perf_counter()
    batch = KMeans(K, n_init=3, random_state=0).fit(X)
    seconds = time.perf_counter() - start
    add("batch KMeans (scikit-learn, n_init=3), the limit", "all items at once, in memory", seconds,
        kmeans_accuracy(batch.cluster_centers_, X_test, labels_test))
    return results


def bench_end_to_end(n: int, url: str, repeat: int = 1, per_claim: int = 16) -> list[dict]:
    """Append everything to the embedded store, then consume it in windows of 60: a no-op
    function (the runtime's own cost per window), each learner without checkpoints, with
    a checkpoint per window, and with runs of ``per_claim`` windows per claim (one
    checkpoint per run: ``windows_per_claim``); interleaved, best of ``repeat`` runs each."""
    X, y = regression_data(n, seed=1)
    P, _ = cluster_data(n, seed=3)
    regression = [dict(zip(FEATURES, x, strict=True), y=t) for x, t in zip(X.tolist(), y.tolist(), strict=True)]
    kmeans = [dict(zip(AXES, p, strict=True)) for p in P.tolist()]
    runs = f"windows_per_claim={per_claim}: a checkpoint per run of {per_claim} windows"
    cases = [  # (label, checkpoint name or None, rows, make, windows per claim)
        ("no-op function (the runtime alone)", None, regression, lambda: _Noop(), 1),
        (f"no-op function, windows_per_claim={per_claim}", None, regression, lambda: _Noop(), per_claim),
        ("streamlog OnlineLinearRegression, checkpoint=False", None, regression,
         lambda: OnlineLinearRegression(FEATURES, "y", checkpoint=False), 1),
        ("streamlog OnlineLinearRegression, checkpoint per window", "OnlineLinearRegression", regression,
         lambda: OnlineLinearRegression(FEATURES, "y"), 1),
        (f"streamlog OnlineLinearRegression, {runs}", "OnlineLinearRegression", regression,
         lambda: OnlineLinearRegression(FEATURES, "y"), per_claim),
        ("streamlog OnlineKMeans, checkpoint=False", None, kmeans, lambda: OnlineKMeans(K, AXES, checkpoint=False),
         1),
        ("streamlog OnlineKMeans, checkpoint per window", "OnlineKMeans", kmeans, lambda: OnlineKMeans(K, AXES), 1),
        (f"streamlog OnlineKMeans, {runs}", "OnlineKMeans", kmeans, lambda: OnlineKMeans(K, AXES), per_claim),
    ]
    best: dict[str, dict] = {}
    for rep in range(repeat):
        for i, (label, name, rows, make, windows_per_claim) in enumerate(cases):
            stream_name = f"e2e.{rep}.{i}"
            stream = streamlog.stream(stream_name, url=url)
            start = time.perf_counter()
            for lo in range(0, n, 10_000):
                stream.extend(rows[lo:lo + 10_000])
            appended = time.perf_counter() - start
            fn = make()
            start = time.perf_counter()
            done = streamlog.streaming(stream_name, size=WINDOW, blocking=False, url=url,
                                       windows_per_claim=windows_per_claim).apply(fn)
            consumed = time.perf_counter() - start
            saved = stream.model(name) if name else None
            # a count window of 60 needs 60 items: a partial last window stays pending
            entry = {"task": "end-to-end", "learner": label, "windows": done,
                     "append_items_per_s": round(n / appended), **rate(done * WINDOW, consumed, done),
                     "checkpoint_seq": saved["seq"] if saved else None}
            if label not in best or entry["items_per_s"] > best[label]["items_per_s"]:
                best[label] = entry
    for label, entry in best.items():
        print(f"  {label:<58} {entry['items_per_s']:>10,} items/s consumed ({entry['windows']} windows, "
              f"checkpoint #{entry['checkpoint_seq']}), appended at {entry['append_items_per_s']:,} items/s",
              flush=True)
    return list(best.values())


_TREE_RUN = """
import inspect, json, sys, tempfile
tree, items, per_claim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, tree + "/scripts")
import bench_learners as b
kw = {"per_claim": per_claim} if "per_claim" in inspect.signature(b.bench_end_to_end).parameters else {}
rows = b.bench_end_to_end(items, f"sqlite:///{tempfile.mkdtemp()}/bench.db", 1, **kw)
print(json.dumps({r["learner"]: r["items_per_s"] for r in rows}))
"""


def compare_trees(before: str, n: int, reps: int, per_claim: int) -> None:
    """The end-to-end rows of ``before`` (a checkout) and of this tree, alternating in each
    of ``reps`` repetitions, each in a fresh process (one run per repetition: a row that
    is a process's first k-means run also pays scikit-learn's import)."""
    import statistics

    rates: dict[str, list[int]] = {}
    for rep in range(reps):
        for label, tree in (("before", before), ("after", str(ROOT))):
            done = subprocess.run([sys.executable, "-c", _TREE_RUN, tree, str(n), str(per_claim)],
                                  capture_output=True, text=True, check=True)
            for name, rate in json.loads(done.stdout.strip().splitlines()[-1]).items():
                rates.setdefault(f"{label}: {name}", []).append(rate)
            print(f"  repetition {rep + 1}, {label} done", flush=True)
    print(f"\n| end to end, {n:,} items, windows of {WINDOW} | items/s, min / median / max of {reps} |")
    print("|---|---:|")
    for name, values in rates.items():
        print(f"| {name} | {min(values):,} / **{statistics.median(values):,.0f}** / {max(values):,} |")


class _Noop:
    """A consumer function that does nothing: what remains is the runtime's own work."""

    def __call__(self, window) -> None:
        return None


# -- reporting --------------------------------------------------------------------------------------


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import river
    import scipy
    import sklearn

    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count())
    return {"nproc": nproc, "cpu": cpu, "python": platform.python_version(), "platform": platform.platform(),
            "numpy": np.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
            "river": river.__version__, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}


def _num(value, digits=4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _per_window(r: dict) -> str:
    return "–" if r["how"].startswith("all items at once") else f"{r['us_per_window']:,}"


def table(results: list[dict]) -> str:
    lines = []
    regression = [r for r in results if r["task"] == "regression"]
    if regression:
        lines += ["| regression learner | how | items/s | µs/window | test RMSE | max coef error | prequential RMSE |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in regression:
            lines.append(f"| {r['learner']} | {r['how']} | {r['items_per_s']:,} | {_per_window(r)} | "
                         f"{_num(r['test_rmse'])} | {_num(r.get('max_coef_error'))} | "
                         f"{_num(r.get('prequential_rmse'))} |")
        lines.append("")
    kmeans = [r for r in results if r["task"] == "kmeans"]
    if kmeans:
        lines += ["| k-means learner | how | items/s | µs/window | test inertia | ARI |",
                  "|---|---|---:|---:|---:|---:|"]
        for r in kmeans:
            lines.append(f"| {r['learner']} | {r['how']} | {r['items_per_s']:,} | {_per_window(r)} | "
                         f"{_num(r['test_inertia'], 3)} | {_num(r['ari'])} |")
        lines.append("")
    e2e = [r for r in results if r["task"] == "end-to-end"]
    if e2e:
        lines += ["| end to end (embedded SQLite store) | windows | consumed items/s | ms/window | appended items/s |",
                  "|---|---:|---:|---:|---:|"]
        for r in e2e:
            lines.append(f"| {r['learner']} | {r['windows']:,} | {r['items_per_s']:,} | "
                         f"{r['us_per_window'] / 1000:.2f} | {r['append_items_per_s']:,} |")
        lines.append("")
    return "\n".join(lines)


DOC_HEAD = """# Learner benchmarks

Produced by `scripts/bench_learners.py` (see its docstring for what is measured);
regenerate with:

*Not run by the docs tests: a benchmark of minutes; `tests/test_docs.py::test_benchmark_scripts_start` \
checks that it starts.*

```bash
{command}
```

Machine: {nproc} CPUs (`nproc`), {cpu}; Python {python}, numpy {numpy}, scipy {scipy},
scikit-learn {sklearn}, river {river}. {items:,} streamed items in windows of {window}
(plus 20,000 held-out items for accuracy); best of {repeat} runs per learner.

Data: regression `y = 2·x1 − x2 + 0.5·x3 + 3·x4 − 2·x5 + 0.5 + noise` (x ~ N(0, 1),
noise σ = 0.5, so the best possible test RMSE is about 0.5); k-means: {k} Gaussian
clusters (σ = 1) in 3-D with centres at least 4σ apart.

"""

DOC_NOTES = """
How to read it:

* **items/s** covers the whole per-window work of a consumer function: converting
  `window.data` (a list of dicts) to what the library takes, and learning. The
  streamlog learners also predict each window before learning it (prequential error)
  and build their sink record; "+ checkpoint" adds serialising the state and one insert
  into the embedded SQLite store per window. µs/window is per window of 60 items.
* **OnlineLinearRegression** is exact: its test RMSE and coefficients equal batch
  least squares (to rounding) at any point of the stream, at a fixed cost per window
  (one `dgeqrf` of a 67 x 7 matrix here). The SGD learners (scikit-learn's
  `SGDRegressor`, river's `LinearRegression`) still carry some optimisation error
  after 200,000 items at their default learning rates.
* **PartialFit** costs the wrapped library's own time plus a `predict` per window for
  the prequential error; for scikit-learn estimators that `predict` is most of the
  difference to calling `partial_fit` directly (input validation, ~0.2 ms per call).
  With river, `PartialFit` uses `learn_many`/`predict_many` (DataFrames, one gradient
  step per window) where the model has them.
* **OnlineKMeans** moves each centre to the running mean of its points (Spark's
  StreamingKMeans rule, no decay here) after a k-means++ start; the limit is batch
  k-means with every item in memory. river's `KMeans` starts from random centres and
  moves the nearest centre by `halflife` times its distance to each point: its result
  depends on that setting and on the start (both rows are river's; 0.5 is its default).
* **End to end**: everything appended first, then one consumer processes all windows
  with `blocking=False`, checkpointing after each; per window that is a claim, the
  learner, a checkpoint and a commit, so the store, not the learner, sets the pace.
  With `windows_per_claim=N` a claim holds up to N ready windows: one claim, one
  checkpoint (saved before the commit) and one commit per run of windows.
  The no-op row is the runtime alone (claim, read and decode the 60 items, commit): no
  learner, however cheap its checkpoints, consumes faster than that row.
  (A count window of 60 waits for 60 items: the last 20 items stay pending.)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per learner (the best counts)")
    parser.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end runs through the store")
    parser.add_argument("--windows-per-claim", type=int, default=16,
                        help="the end-to-end rows with runs of windows: windows per claim (default 16)")
    parser.add_argument("--only-e2e", action="store_true", help="only the end-to-end runs (no doc written)")
    parser.add_argument("--before-tree", metavar="DIR",
                        help="with --only-e2e: alternate each repetition with the end-to-end rows of the checkout "
                             "in DIR (its scripts/bench_learners.py, in a subprocess): min / median / max per row")
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "learners.json"))
    parser.add_argument("--doc", default=None,
                        help="markdown file to write (default: docs/benchmarks-learners.md for 200,000 items)")
    parser.add_argument("--from-json", default=None, help="only render the tables of an earlier run's JSON")
    args = parser.parse_args()
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
        write_doc(report, args.doc or str(ROOT / "docs" / "benchmarks-learners.md"))
        return

    if args.before_tree:
        compare_trees(args.before_tree, args.items, args.repeat, args.windows_per_claim)
        return
    info = machine()
    print(f"{args.items:,} items in windows of {WINDOW}; {info['nproc']} CPUs, {info['cpu']}", flush=True)
    workdir = tempfile.mkdtemp(prefix="streamlog-bench-learners-")
    url = f"sqlite:///{workdir}/bench.db"
    try:
        stream = streamlog.stream("bench", url=url)
        results = []
        if not args.only_e2e:
            print("regression:", flush=True)
            results += bench_regression(args.items, args.repeat, stream)
            print("k-means:", flush=True)
            results += bench_kmeans(args.items, args.repeat, stream)
        if not args.skip_e2e:
            print("end to end (embedded SQLite store):", flush=True)
            results += bench_end_to_end(args.items, url, args.repeat, args.windows_per_claim)
    finally:
        streamlog.connect(url).close()
        shutil.rmtree(workdir, ignore_errors=True)

    command = "python scripts/bench_learners.py" + "".join(
        f" {a}" for a in sys.argv[1:] if not a.startswith("--doc") and not a.startswith("--out"))
    report = {"command": command, "items": args.items, "window": WINDOW, "repeat": args.repeat,
              "machine": info, "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    markdown = table(results)
    print()
    print(markdown)
    print(f"wrote {out}")
    doc = args.doc or (str(ROOT / "docs" / "benchmarks-learners.md")
                       if args.items == 200_000 and not args.only_e2e else None)
    if doc:
        write_doc(report, doc)


def write_doc(report: dict, doc: str) -> None:
    info = report["machine"]
    head = DOC_HEAD.format(command=report["command"], nproc=info["nproc"], cpu=info["cpu"], python=info["python"],
                           numpy=info["numpy"], scipy=info["scipy"], sklearn=info["scikit-learn"],
                           river=info["river"], items=report["items"], window=report["window"],
                           repeat=report["repeat"], k=K)
    Path(doc).write_text(head + table(report["results"]) + DOC_NOTES)
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
