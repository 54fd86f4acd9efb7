"""The scaling plan in miniature, on Ray: cell joins as Ray tasks, a sharded reference index.

1. ``neardup.integrations.ray.find_duplicates`` reads the digits from ``.npy`` shards (one
   Ray task per shard) and joins every cell of the partition as one Ray task; the result
   equals ``neardup.find_duplicates`` in one process, which this script checks.
2. ``ShardedReference.build`` saves one ``ReferenceIndex`` per training shard (one Ray task
   each, on shared storage on a cluster); ``score`` scores the test images against every shard
   (one task per shard and batch) and keeps each image's nearest training image over the
   shards: the same answer as one index over the whole split, also checked.

Here Ray runs locally (``ray.init(num_cpus=2)``); on a cluster, ``ray.init(address="auto")``
(or ``"ray://head:10001"``) is the only change. Run: python examples/ray_sharded_reference.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import ray
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import neardup
from neardup.integrations.ray import ShardedReference, find_duplicates

THRESHOLD = neardup.Cosine(0.98)  # fixed: every shard must judge with the same distance
SHARDS = 3


def main() -> None:
    digits = load_digits()
    pixels = (digits.images / 16.0).astype(np.float32).reshape(len(digits.images), -1)
    ids = np.arange(len(pixels))
    x_train, x_test, id_train, id_test = train_test_split(
        pixels, ids, test_size=0.25, random_state=0
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shards = {"train": [], "test": []}
            for split, x in (("train", x_train), ("test", x_test)):
                for s, rows in enumerate(np.array_split(np.arange(len(x)), SHARDS)):
                    np.save(Path(tmp) / f"{split}-{s}.npy", x[rows])
                    shards[split].append(str(Path(tmp) / f"{split}-{s}.npy"))
            cells = neardup.Cells(cell_size=128)  # ~14 cells: ~14 Ray tasks
            on_ray = find_duplicates(shards, threshold=THRESHOLD, backend=cells)

            sharded = ShardedReference.build(
                x_train, Path(tmp) / "reference", threshold=THRESHOLD, n_shards=SHARDS,
                ids=id_train,
            )  # fmt: skip
            merged = sharded.score(x_test, ids=id_test, split="test", batch_rows=200)
    finally:
        ray.shutdown()

    data = {"train": x_train, "test": x_test}
    single = neardup.find_duplicates(data, threshold=THRESHOLD, backend=cells)
    leak = on_ray.leakage["test"]
    print(f"{len(x_train)} training and {len(x_test)} test images, {SHARDS} shards each")
    print(f"leakage test -> train, cells joined on Ray:  {leak.count} of {leak.total} images")
    assert on_ray.to_dict() == single.to_dict(), "Ray and single-process results differ"
    print("same result as neardup.find_duplicates in one process")

    whole = neardup.ReferenceIndex.build(x_train, ids=id_train, threshold=THRESHOLD)
    one = whole.score(x_test, ids=id_test, split="test")
    print(f"leakage test -> train, {SHARDS} index shards on Ray: {merged.count} of {merged.total}")
    print(f"leakage test -> train, one index:            {one.count} of {one.total} images")
    assert merged.to_dict() == one.to_dict(), "sharded and single-index leakage differ"
    print("same samples, same nearest training images")


if __name__ == "__main__":
    main()
