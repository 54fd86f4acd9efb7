"""``Auto`` when many rows are near-copies: planted leaks found vs the share of copied rows.

Gaussian 5,000 x 20 and scikit-learn digits (1,797 x 64), split 80/20. A ``share`` of all
rows is turned into within-train near-copy pairs (a row plus Gaussian noise of 5 % of the
typical coordinate), and 50 test rows into near-copies of other training rows (the leaks).
Printed: leaks found by ``find_duplicates`` with its defaults, test samples flagged, and the
``Auto`` reason (intrinsic dimension, anchor, copy-like rows set aside, cut).

    python benchmarks/bench_auto_copies.py
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

import neardup


def case(name: str, x: np.ndarray, rng: np.random.Generator, share: float) -> None:
    n, split, leaks, sigma = len(x), int(0.8 * len(x)), 50, 0.05
    x = x.copy()
    pairs = int(share * n / 2)
    order = rng.permutation(split)
    source, copy = order[:pairs], order[pairs : 2 * pairs]
    scale = np.linalg.norm(x, axis=1).mean() / np.sqrt(x.shape[1])
    x[copy] = x[source] + rng.normal(0, sigma * scale, size=(pairs, x.shape[1]))
    slots = rng.choice(np.arange(split, n), leaks, replace=False)
    sources = rng.choice(order[2 * pairs :], leaks, replace=False)
    x[slots] = x[sources] + rng.normal(0, sigma * scale, size=(leaks, x.shape[1]))
    result = neardup.find_duplicates({"train": x[:split], "test": x[split:]})
    flagged = set(result.leakage["test"].positions)
    hits = sum(int(p - split) in flagged for p in slots)
    print(
        f"| {name} | {share:.2f} | {hits}/{leaks} | {len(flagged)} | {result.threshold.reason} |",
        flush=True,
    )


def main() -> None:
    rng = np.random.default_rng(0)
    digits = load_digits().data.astype(np.float32)
    print("| data | share of rows in copy pairs | leaks found | flagged | Auto's reason |")
    print("|---|---:|---:|---:|---|")
    for share in (0.0, 0.1, 0.28, 0.5):
        case("Gaussian 5,000 x 20", rng.normal(size=(5000, 20)).astype(np.float32), rng, share)
        case("digits 1,797 x 64", digits, rng, share)


if __name__ == "__main__":
    main()
