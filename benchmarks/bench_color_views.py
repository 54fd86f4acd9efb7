"""Which image input view(s) for colour images: recall per kind and false alarms.

Colourised Fashion-MNIST (each image painted with its own random foreground and background
colour, as in ``bench_quality.py``), 20,000 train + 5,000 test, 50 planted copies per kind,
``find_duplicates`` defaults (``Auto`` per view, ``combine="any"``); flagged unplanted test
images are checked with ``bench_quality.same_picture``. Controls: colourised digits, disjoint
train/test (1,200 + 597), three colourings; nothing should be flagged.

    python benchmarks/bench_color_views.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality as bq

import neardup
from neardup.views import ImageView

LUMA = ImageView(color="luma")
YCBCR = ImageView(color="ycbcr")
CANDIDATES = {
    "colour, whole cast (round 2)": {"rgb": ImageView(color_cast=1.0)},
    "luma": {"luma": LUMA},
    "YCbCr (luma 8 x 8, chroma 4 x 4)": {"ycbcr": YCBCR},
    "colour, cast 0.25": {"rgb": ImageView()},
    "colour, whole cast + luma": {"rgb": ImageView(color_cast=1.0), "luma": LUMA},
    "colour, cast 0.5 + luma": {"rgb": ImageView(color_cast=0.5), "luma": LUMA},
    "colour, cast 0.25 + luma (round 3)": {"rgb": ImageView(), "luma": LUMA},
    "colour, no cast + luma": {"rgb": ImageView(color_cast=0.0), "luma": LUMA},
    "colour, cast 0.25 + YCbCr": {"rgb": ImageView(), "ycbcr": YCBCR},
    "colour, cast 0.25 + luma + YCbCr (default)": {
        "rgb": ImageView(),
        "luma": LUMA,
        "ycbcr": YCBCR,
    },
}


def rows(views: dict, images: np.ndarray) -> dict:
    return {name: view(images) for name, view in views.items()}


def main() -> None:
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    fashion_train, fashion_test = bq.load_fashion()
    train = bq.colorize(fashion_train[:20000], rng)
    test = bq.colorize(fashion_test[:5000], rng)
    kinds = {k: bq.IMAGE_KINDS[k] for k in ("exact", "noise", "brightness x0.85", "jpeg q75")} | {
        "colour jitter": bq.color_jitter
    }
    planted, kind_of, _ = bq.plant(train, test, kinds, 50, rng)
    digits = np.rint(load_digits().images * 255 / 16).astype(np.uint8)
    controls = []
    for seed in (3, 4, 5):
        g = np.random.default_rng(seed)
        painted = bq.colorize(digits, g)
        order = g.permutation(len(painted))
        controls.append((painted[order[:1200]], painted[order[1200:]]))
    print("| views | " + " | ".join(kinds) + " | false alarms | digits controls flagged |")
    print("|---|" + "---:|" * (len(kinds) + 2))
    for label, views in CANDIDATES.items():
        start = time.perf_counter()
        data = {"train": rows(views, train), "test": rows(views, planted)}
        result = neardup.find_duplicates(data)
        leak = result.leakage["test"]
        flagged = dict(zip(leak.positions, leak.nearest_positions))
        recall = [
            np.mean([p in flagged for p, k in kind_of.items() if k == kind]) for kind in kinds
        ]
        extra = [p for p in flagged if p not in kind_of]
        false = sum(not bq.same_picture(planted[p], train[flagged[p]]) for p in extra)
        flags = [
            neardup.find_duplicates({"train": rows(views, a), "test": rows(views, b)})
            .leakage["test"]
            .count
            for a, b in controls
        ]
        cells = " | ".join(f"{r:.2f}" for r in recall)
        print(
            f"| {label} | {cells} | {false} of {len(extra)} | {', '.join(map(str, flags))} |"
            f"  ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
