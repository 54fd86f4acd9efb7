"""The 100M-sample plan in miniature: a sharded reference index, scored in parallel, merged.

The training split is cut into shards; each shard becomes a ``neardup.ReferenceIndex`` saved
to its own directory (on a cluster: one task per shard, written to shared storage). New data
is scored against every shard in separate worker processes (on a cluster: Ray tasks or Dask
futures, one per shard; here the standard library's process pool), and the per-shard answers
are merged by keeping each sample's nearest reference row. With a fixed threshold and row
normalisation (both independent of the shard), the merged answer equals that of one index
over the whole split, which this script checks. Run: python examples/sharded_reference.py
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import neardup

THRESHOLD = neardup.Cosine(0.98)  # fixed: every shard must judge with the same distance
SHARDS = 3


def score_shard(task: tuple[str, np.ndarray, np.ndarray]) -> neardup.Leakage:
    """One worker: open a shard (memory-mapped) and score the new samples against it."""
    path, x_new, ids_new = task
    return neardup.ReferenceIndex.load(path).score(x_new, ids=ids_new, split="test")


def merge(answers: list[neardup.Leakage]) -> dict[int, int]:
    """Per leaked sample, its nearest reference row over all shards.

    Ties go to the earlier shard, then the earlier row in it: shards hold consecutive rows
    of the split, so this is the lowest row, as one index over the whole split breaks ties.
    """
    best: dict[int, tuple[float, int, int, int]] = {}
    for shard, leak in enumerate(answers):
        pairs = zip(leak.ids, leak.nearest_ids, leak.nearest_positions, leak.distances.tolist())
        for i, j, position, d in pairs:
            best[i] = min(best.get(i, (np.inf, 0, 0, -1)), (d, shard, position, j))
    return {i: key[3] for i, key in best.items()}


def main() -> None:
    digits = load_digits()
    pixels = (digits.images / 16.0).astype(np.float32).reshape(len(digits.images), -1)
    ids = np.arange(len(pixels))
    x_train, x_test, id_train, id_test = train_test_split(
        pixels, ids, test_size=0.25, random_state=0
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for s, rows in enumerate(np.array_split(np.arange(len(x_train)), SHARDS)):
            shard = neardup.ReferenceIndex.build(
                x_train[rows], ids=id_train[rows], threshold=THRESHOLD
            )
            paths.append(str(shard.save(Path(tmp) / f"shard-{s}")))
        tasks = [(path, x_test, id_test) for path in paths]
        with ProcessPoolExecutor(max_workers=2) as pool:
            merged = merge(list(pool.map(score_shard, tasks)))

    whole = neardup.ReferenceIndex.build(x_train, ids=id_train, threshold=THRESHOLD)
    leak = whole.score(x_test, ids=id_test, split="test")
    single = dict(zip(leak.ids, leak.nearest_ids))
    print(f"{SHARDS} shards of ~{len(x_train) // SHARDS} training images, {len(x_test)} test")
    print(f"leakage test -> train, sharded and merged: {len(merged)} of {len(x_test)} images")
    print(f"leakage test -> train, one index:          {leak.count} of {leak.total} images")
    assert set(merged) == set(single), "sharded and single-index leakage differ"
    assert all(merged[i] == single[i] for i in single), "nearest reference rows differ"
    print("same samples, same nearest training images")


if __name__ == "__main__":
    main()
