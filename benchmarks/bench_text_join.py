"""Text rows at scale: pair recall of the n-gram join against brute force, and its time.

From 20,000 rows, ``find_duplicates`` finds the close pairs of ``TextView`` rows from MinHash
candidates of their n-grams (``neardup.search``'s ``minhash_signatures`` and
``banded_candidates``) instead of the cell engine. This measures, on real sentences (the
standard library's docstrings, pydoc's topics and the SpamAssassin mails: ``make
bench-data``), every pair within the threshold ``find_duplicates`` resolved, by brute force,
and counts a pair as found when both rows sit in one duplicate set (as ``bench_duplicates``
does), for each seed of the MinHash functions.

    python benchmarks/bench_text_join.py                      # 25,000 and 50,000 sentences
    python benchmarks/bench_text_join.py --rows 60000 --seeds 0
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_quality import scale_sentences

import neardup
from neardup.views import TextView


def brute_pairs(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of unit rows ``x`` within ``threshold`` (float64 check)."""
    found_i, found_j = [], []
    for start in range(0, len(x), 2048):
        d2 = 2.0 - 2.0 * (x[start : start + 2048] @ x.T)
        a, b = np.nonzero(d2 <= threshold * threshold * 1.001)
        a = a + start
        keep = b > a
        a, b = a[keep], b[keep]
        diff = x[a].astype(np.float64) - x[b]
        close = np.sqrt(np.einsum("ij,ij->i", diff, diff)) <= threshold
        found_i.append(a[close])
        found_j.append(b[close])
    return np.concatenate(found_i), np.concatenate(found_j)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="25000,50000")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    sentences = scale_sentences()
    order = np.random.default_rng(0).permutation(len(sentences))
    print(f"{len(sentences):,} distinct sentences")
    print("| rows | seed | threshold | s | bands | candidates | pairs | found | recall |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in (int(v) for v in args.rows.split(",")):
        rows = TextView()(sentences[i] for i in order[:n])
        x = np.asarray(rows) / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        exact = None
        for seed in (int(v) for v in args.seeds.split(",")):
            start = time.perf_counter()
            result = neardup.find_duplicates(rows, seed=seed)
            seconds = time.perf_counter() - start
            threshold = result.threshold.value
            if exact is None:
                exact = brute_pairs(x, threshold)
            set_of = np.full(n, -1, dtype=np.int64)
            for k, cluster in enumerate(result.clusters):
                set_of[np.asarray(cluster.positions, dtype=np.int64)] = k
            i, j = exact
            found = int(np.count_nonzero((set_of[i] >= 0) & (set_of[i] == set_of[j])))
            join = result.settings.get("text_join", {})
            print(
                f"| {n:,} | {seed} | {threshold:.4f} | {seconds:.1f} | {join.get('bands', '-')} | "
                f"{join.get('candidates', '-')} | {len(i):,} | {found:,} | "
                f"{found / max(1, len(i)):.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
