"""Why noisy copies are missed: where they lie against natural neighbours, per image view.

Fashion-MNIST 60,000 + 10,000 (grey) and its colourised 20,000 + 5,000 (as in
``bench_quality.py``), 50 planted copies per kind. For each 8x8 thumbnail view (``Auto`` cut
``t`` from ``find_duplicates``), in units of ``t``: the natural test->train nearest distances
(minimum, 0.1 % and 1 % quantiles) and the planted copies' distance to their source (90th
percentile and maximum). A cut can only separate a kind whose maximum lies below the natural
low quantiles. Then two pair-level statistics measured as candidate rules for noise:

- *local copy chance* ``(k - 1) * (d_1 / d_k) ** m`` of each test row (its nearest train
  distance against its 10th, ``m`` the view's intrinsic dimension), the per-row test ``Auto``
  already uses to set copies aside: the noisy copies' largest value against the natural rows'
  low quantiles, and natural rows beyond ``t`` but within ``2 t`` that a rule "chance below L"
  would add (and how many of those ``same_picture`` confirms);
- *residual whiteness*: the largest absolute autocorrelation (lags (0,1), (1,0), (1,+-1), (0,2),
  (2,0)) of the full-resolution residual after a per-channel gain fit, for noisy copies beyond
  ``t`` and for natural pairs within ``2 t`` (white noise: near 0).

    python benchmarks/bench_noise_views.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality as bq

import neardup
from neardup.views import ImageView

LAGS = ((0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0))


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def knn(queries: np.ndarray, targets: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``(n, k)`` distances and indices of unit ``queries`` among unit ``targets``."""
    dist = np.empty((len(queries), k))
    index = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 2000):
        sim = queries[start : start + 2000] @ targets.T
        top = np.argpartition(-sim, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, top, 1), axis=1)
        top = np.take_along_axis(top, order, 1)
        index[start : start + len(top)] = top
        best = np.take_along_axis(sim, top, 1)
        dist[start : start + len(top)] = np.sqrt(np.maximum(2 - 2 * best, 0))
    return dist, index


def whiteness(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Largest |autocorrelation| over :data:`LAGS` of ``b - gain * a`` (per channel), per pair."""
    a = a.astype(np.float64).reshape(a.shape[0], a.shape[1], a.shape[2], -1)
    b = b.astype(np.float64).reshape(a.shape)
    a = a - a.mean(axis=(1, 2), keepdims=True)
    b = b - b.mean(axis=(1, 2), keepdims=True)
    gain = (a * b).sum(axis=(1, 2)) / np.maximum((a * a).sum(axis=(1, 2)), 1e-12)
    r = b - gain[:, None, None, :] * a
    energy = np.maximum((r * r).sum(axis=(1, 2, 3)), 1e-12)
    height, width = r.shape[1:3]
    out = []
    for dy, dx in LAGS:
        p = r[:, dy:, max(dx, 0) : width + min(dx, 0)]
        q = r[:, : height - dy, max(-dx, 0) : width + min(-dx, 0)]
        out.append(np.abs((p * q).sum(axis=(1, 2, 3))) / energy)
    return np.max(out, axis=0)


def case(name: str, train, test, kinds: dict, views: dict, rng: np.random.Generator) -> None:
    planted, kind_of, source_of = bq.plant(train, test, kinds, 50, rng)
    rows = {v: (view(train), view(planted)) for v, view in views.items()}
    result = neardup.find_duplicates(
        {"train": {v: r[0] for v, r in rows.items()}, "test": {v: r[1] for v, r in rows.items()}}
    )
    natural = np.array([p for p in range(len(planted)) if p not in kind_of])
    noisy = np.array([p for p, k in kind_of.items() if k == "noise"])
    print(f"\n{name}")
    print(
        "| view | natural min / 0.1 % / 1 % | " + " | ".join(f"{k} q90 / max" for k in kinds) + " |"
    )
    print("|---|---|" + "---|" * len(kinds))
    for v, (a, b) in rows.items():
        t = result.views[v].threshold.value
        ua, ub = unit(a), unit(b)
        dist, index = knn(ub, ua, 10)
        nat = dist[natural, 0] / t
        cells = []
        for kind in kinds:
            pos = [p for p, k in kind_of.items() if k == kind]
            d = np.linalg.norm(ub[pos] - ua[[source_of[p] for p in pos]], axis=1) / t
            cells.append(f"{np.quantile(d, 0.9):.2f} / {d.max():.2f}")
        q = np.quantile(nat, [0.001, 0.01])
        print(f"| {v} | {nat.min():.2f} / {q[0]:.2f} / {q[1]:.2f} | " + " | ".join(cells) + " |")
        m = float(result.views[v].threshold.reason.split("dimension ")[1].split(",")[0])
        with np.errstate(divide="ignore"):
            chance = np.log10(9 * (dist[:, 0] / dist[:, 9]) ** m)
        worst = chance[noisy].max()
        beyond = natural[(dist[natural, 0] > t) & (dist[natural, 0] <= 2 * t)]
        line = [
            f"  {v}: log10 copy chance, noisy copies max {worst:.2f}; natural rows in "
            f"(t, 2t] with chance below"
        ]
        for level in (-4, -5, -6):
            hit = beyond[chance[beyond] < level]
            same = sum(bq.same_picture(planted[p], train[index[p, 0]]) for p in hit)
            found = np.mean(
                (dist[noisy, 0] <= t) | ((chance[noisy] < level) & (dist[noisy, 0] <= 2 * t))
            )
            line.append(f"1e{level}: {len(hit)} ({same} same_picture; noise recall {found:.2f})")
        print(" ".join(line[:1]) + " " + ", ".join(line[1:]))
        if v.endswith("8") or v == "grey 8x8":
            far = noisy[dist[noisy, 0] > t]
            white_far = whiteness(train[index[far, 0]], planted[far])
            white_nat = whiteness(train[index[beyond, 0]], planted[beyond])
            print(
                f"  {v}: residual whiteness, noisy copies beyond t: max {white_far.max():.3f} "
                f"(n={len(far)}); natural pairs in (t, 2t]: min {white_nat.min():.3f}, 1 % "
                f"{np.quantile(white_nat, 0.01):.3f} (n={len(beyond)})"
            )


def main() -> None:
    fashion_train, fashion_test = bq.load_fashion()
    kinds = {k: bq.IMAGE_KINDS[k] for k in ("exact", "noise", "jpeg q75")}
    grey_views = {
        "grey 8x8": ImageView(),
        "grey 4x4": ImageView(size=4),
        "grey 16x16": ImageView(size=16),
    }
    case(
        "Fashion-MNIST 60,000 + 10,000",
        fashion_train,
        fashion_test,
        kinds,
        grey_views,
        np.random.default_rng(0),
    )
    rng = np.random.default_rng(0)
    train = bq.colorize(fashion_train[:20000], rng)
    test = bq.colorize(fashion_test[:5000], rng)
    colour_views = {
        "colour 8": ImageView(),
        "luma 8": ImageView(color="luma"),
        "ycbcr 8": ImageView(color="ycbcr"),
    }
    case(
        "colourised Fashion 20,000 + 5,000",
        train,
        test,
        kinds | {"colour jitter": bq.color_jitter},
        colour_views,
        rng,
    )


if __name__ == "__main__":
    main()
