"""Within-threshold recall of annoy against exact search on hard near-duplicates, per tree count.

Harder than bench_duplicates.py's data: near-duplicate pairs are spread uniformly from distance
0 up to about the default threshold (0.2 x the median distance to the 10th neighbour), so many
sit right at its edge, on clustered row-normalised activations. Ground truth is exact search for
a sample of query rows; the threshold is estimated from the same sample.

    python benchmarks/bench_recall.py --n 100000 --d 64 --trees 4,6,8 --search-k -1,66
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def make_hard(n: int, d: int, seed: int = 1) -> np.ndarray:
    """Clustered unit rows; 5 % are noisy copies at distances spread over ``[0, ~0.15]``."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(10, n // 100), d)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)]
    x += rng.normal(scale=0.7, size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    m = n // 20
    targets = rng.choice(n, m, replace=False)
    noise = rng.uniform(0, 0.15, size=(m, 1)) / np.sqrt(d)
    x[targets] = x[rng.integers(0, n, m)] + rng.normal(size=(m, d)).astype(np.float32) * noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=4000)
    parser.add_argument("--trees", default="4,6,8")
    parser.add_argument("--search-k", default="-1")
    args = parser.parse_args()
    from annoy import AnnoyIndex

    n, d, k = args.n, args.d, args.k
    x = make_hard(n, d)
    rows = np.random.default_rng(2).choice(n, args.queries, replace=False)
    sq = np.einsum("ij,ij->i", x, x)
    truth, kth = [], []
    for r in rows:
        dist = np.sqrt(np.maximum(sq - 2 * (x @ x[r]) + sq[r], 0))
        dist[r] = np.inf
        nearest = np.argpartition(dist, k)[:k]
        truth.append((nearest, dist[nearest]))
        kth.append(dist[nearest].max())
    threshold = 0.2 * float(np.median(kth))
    pairs = sum(int((dd <= threshold).sum()) for _, dd in truth)
    print(f"{n:,}x{d}: threshold {threshold:.4f}, {pairs} true pairs from {len(rows)} queries")
    print(f"{'trees':>5} {'search_k':>8} {'build s':>7} {'us/query':>8} {'recall':>7}")
    for trees in map(int, args.trees.split(",")):
        index = AnnoyIndex(d, "euclidean")
        index.set_seed(0)
        start = time.perf_counter()
        for i in range(n):
            index.add_item(i, x[i].tolist())
        index.build(trees, n_jobs=1)
        built = time.perf_counter() - start
        for search_k in map(int, args.search_k.split(",")):
            found = 0
            start = time.perf_counter()
            for r, (nearest, dist) in zip(rows, truth):
                got = set(index.get_nns_by_item(int(r), k + 1, search_k))
                found += len(set(nearest[dist <= threshold].tolist()) & got)
            per_query = (time.perf_counter() - start) / len(rows)
            print(
                f"{trees:>5} {search_k:>8} {built:7.2f} {per_query * 1e6:8.0f} "
                f"{found / max(1, pairs):7.4f}"
            )
        index.unload()


if __name__ == "__main__":
    main()
