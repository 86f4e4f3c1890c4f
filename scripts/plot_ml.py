"""Draw the learner figures of docs/ml.md from the models' sink records.

    python scripts/plot_ml.py            # writes docs/img/regression.png and docs/img/kmeans.png

Streams drifting data through a throwaway embedded database, lets the learners learn
it window by window with ``sink=``, then plots what the sink streams recorded: the
model after every window, exactly as another consumer, ``streamlog tail`` or a
dashboard would see it.

* regression.png — ``y = c1·x1 + c2·x2 + noise`` with (c1, c2) changing from (2, -1)
  to (-1, 3) halfway: the coefficients of an exact model and of one with a half-life
  of 60 items, and each window's prequential RMSE.
* kmeans.png — three Gaussian clusters in 3-D, one of which moves halfway: the points
  and the path of every centre (projected on two axes), and each window's inertia.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the sys.path line that makes the checkout importable
import numpy as np  # noqa: E402 - after the sys.path line that makes the checkout importable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import streamlog  # noqa: E402 - after the sys.path line that makes the checkout importable
from streamlog.consumers import OnlineKMeans, OnlineLinearRegression  # noqa: E402 - after the sys.path line that makes the checkout importable

BEFORE, AFTER = (2.0, -1.0), (-1.0, 3.0)
CENTERS = np.array([[0.0, 0.0, 0.0], [6.0, 6.0, 0.0], [0.0, 6.0, 6.0]])
MOVED = np.array([-2.0, 9.0, 9.0])


def records(url: str, sink: str) -> list[dict]:
    return [r["data"] for r in streamlog.stream(sink, url=url).read(limit=None)]


def regression(url: str, windows: int, out: Path) -> None:
    rng = np.random.default_rng(0)
    stream = streamlog.stream("plot.sensors", url=url)
    for w in range(windows):
        c1, c2 = BEFORE if w < windows // 2 else AFTER
        x = rng.uniform(-1, 1, size=(60, 2))
        y = c1 * x[:, 0] + c2 * x[:, 1] + rng.normal(scale=0.1, size=60)
        stream.extend([{"x1": a, "x2": b, "y": t} for (a, b), t in zip(x.tolist(), y.tolist(), strict=True)])
    for name, halflife in (("exact", None), ("halflife60", 60)):
        model = OnlineLinearRegression(["x1", "x2"], "y", halflife=halflife, name=name)
        streamlog.streaming("plot.sensors", size=60, group=name, sink=f"plot.{name}", blocking=False,
                            url=url).apply(model)
    exact, forgetting = records(url, "plot.exact"), records(url, "plot.halflife60")

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    seq = [r["seq"] for r in exact]
    colors = {"x1": "tab:blue", "x2": "tab:orange"}
    for i, feature in enumerate(("x1", "x2")):
        truth = [BEFORE[i] if s <= windows // 2 else AFTER[i] for s in seq]
        top.step(seq, truth, where="mid", color="black", linestyle="--", linewidth=1,
                 label="true coefficients" if i == 0 else None)
        top.plot(seq, [r["coef"][feature] for r in forgetting], marker="o", markersize=3, color=colors[feature],
                 label=f"coef {feature}, halflife=60 items")
        top.plot(seq, [r["coef"][feature] for r in exact], color=colors[feature], alpha=0.45, linewidth=2,
                 label=f"coef {feature}, exact (no forgetting)")
    top.set_ylabel("coefficient")
    top.set_title("OnlineLinearRegression on y = c1·x1 + c2·x2 + noise, windows of 60 items")
    top.legend(fontsize=8, ncol=2, loc="center left", bbox_to_anchor=(0.0, 0.42))
    top.grid(alpha=0.3)
    bottom.semilogy(seq[1:], [r["window_rmse"] for r in forgetting[1:]], marker="o", markersize=3,
                    color="tab:green", label="halflife=60 items")
    bottom.semilogy(seq[1:], [r["window_rmse"] for r in exact[1:]], color="tab:green", alpha=0.45, linewidth=2,
                    label="exact")
    bottom.axhline(0.1, color="black", linestyle=":", linewidth=1, label="noise σ = 0.1")
    bottom.set_ylabel("prequential RMSE\n(window, before learning it)")
    bottom.set_xlabel("window (seq)")
    bottom.legend(fontsize=8)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")


def kmeans(url: str, windows: int, out: Path) -> None:
    rng = np.random.default_rng(1)
    stream = streamlog.stream("plot.points", url=url)
    shown = []
    for w in range(windows):
        centers = CENTERS.copy()
        if w >= windows // 2:
            centers[2] = MOVED
        points = centers[rng.integers(0, 3, size=60)] + rng.normal(size=(60, 3))
        shown.append(points)
        stream.extend([{"x": x, "y": y, "z": z} for x, y, z in points.tolist()])
    model = OnlineKMeans(3, ["x", "y", "z"], halflife=120, name="kmeans")
    streamlog.streaming("plot.points", size=60, sink="plot.kmeans", blocking=False, url=url).apply(model)
    history = records(url, "plot.kmeans")

    points = np.vstack(shown)
    labels = model.predict(points)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    left.scatter(points[:, 1], points[:, 2], c=labels, cmap="tab10", vmin=0, vmax=9, s=4, alpha=0.25)
    for j in range(3):
        path = np.array([[r["centers"][j]["y"], r["centers"][j]["z"]] for r in history])
        left.plot(path[:, 0], path[:, 1], color=f"C{j}", marker="o", markersize=3, linewidth=1.5,
                  label=f"centre {j}")
        left.plot(*path[-1], color=f"C{j}", marker="X", markersize=11, markeredgecolor="black")
    left.scatter([MOVED[1]], [MOVED[2]], marker="+", s=120, color="black", label="true centres")
    left.scatter(CENTERS[:, 1], CENTERS[:, 2], marker="+", s=120, color="black")
    left.annotate("cluster 3 moves\nhalfway", xy=(MOVED[1], MOVED[2]), xytext=(1.0, 9.5), fontsize=8,
                  arrowprops={"arrowstyle": "->", "color": "gray"})
    left.set_xlabel("y")
    left.set_ylabel("z")
    left.set_title("OnlineKMeans(k=3, halflife=120): centre paths (y-z plane)")
    left.legend(fontsize=8, loc="lower right")
    left.grid(alpha=0.3)
    right.plot([r["seq"] for r in history[1:]], [r["window_inertia"] for r in history[1:]], marker="o",
               markersize=3, color="tab:purple")
    right.axhline(3.0, color="black", linestyle=":", linewidth=1, label="3 (unit variance in 3-D)")
    right.set_xlabel("window (seq)")
    right.set_ylabel("prequential inertia\n(mean squared distance, window)")
    right.set_title("error per window")
    right.legend(fontsize=8, loc="upper right")
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"))
    parser.add_argument("--windows", type=int, default=30)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="streamlog-plot-")
    url = f"sqlite:///{workdir}/plot.db"
    try:
        regression(url, args.windows, out / "regression.png")
        kmeans(url, args.windows, out / "kmeans.png")
    finally:
        streamlog.connect(url).close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
