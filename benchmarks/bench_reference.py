"""One shard of the 100M-sample plan: build, save, load and score a ``ReferenceIndex``.

The README's scaling section multiplies these per-shard figures out to 100M samples. Build
and scoring run in separate subprocesses (a shard is built once by one task and scored by
others), each reporting wall and CPU seconds and its own peak RSS; the data are the
benchmark's clustered activations with planted near-duplicates (``bench_duplicates``), the
queries a mix of fresh rows and near-copies of reference rows.

    python benchmarks/bench_reference.py                       # 1M x 64 shard, 100k queries
    python benchmarks/bench_reference.py --n 200000 --queries 20000
    python benchmarks/bench_reference.py --backend annoy       # the annoy engine (before 0.2)
    python benchmarks/bench_reference.py --backend both        # both, same data, one run

Recall: for a seeded sample of query rows, the nearest reference row within the threshold by
brute force (float32 screen, exact float64 distances); a query counts as found when the index
flags it with the same distance.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_duplicates import _children_cpu, make_data

THRESHOLD = 0.12  # about Relative(0.2) on this data at 1M x 64 (bench_duplicates prints it)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    return time.process_time() + _children_cpu()


def _make(n: int, d: int, m: int, data: str, queries: str) -> dict:
    """Reference rows and queries: fresh rows, 5 % of them near-copies of reference rows."""
    x = make_data(n + m, d)
    rng = np.random.default_rng(2)
    q = x[n:]
    copied = rng.choice(n, m // 20, replace=False)
    q[: len(copied)] = x[copied] + rng.normal(scale=1e-3, size=(len(copied), d))
    np.save(data, x[:n])
    np.save(queries, q)
    return {"planted": len(copied)}


def _build(data: str, index_dir: str, backend: str = "auto") -> dict:
    import neardup
    from neardup.search import Rows, find_copies

    x = np.load(data)
    hash_cpu = time.process_time()
    copies = find_copies(Rows([x], "row")).n_copies  # step 1 of the plan: exact copies
    hash_cpu = time.process_time() - hash_cpu
    start, cpu = time.perf_counter(), _cpu()
    index = neardup.ReferenceIndex.build(x, threshold=neardup.Distance(THRESHOLD), backend=backend)
    built = time.perf_counter() - start
    index.save(index_dir)
    return {
        "build_s": built,
        "save_s": time.perf_counter() - start - built,
        "cpu_s": _cpu() - cpu,
        "peak_mib": _peak_mib(),
        "hash_cpu_s": hash_cpu,
        "copies": copies,
        "disk_mib": sum(f.stat().st_size for f in Path(index_dir).rglob("*") if f.is_file())
        / 2**20,
        "settings": {
            k: v
            for k, v in index.settings.items()
            if "cell" in k or "margin" in k or "entries" in k or "trees" in k
        },
    }


def _score(queries: str, index_dir: str, data: str = "", recall_queries: str = "0") -> dict:
    import neardup

    q = np.load(queries)
    start = time.perf_counter()
    index = neardup.ReferenceIndex.load(index_dir)
    loaded = time.perf_counter() - start
    cpu = _cpu()
    leak = index.score(q, split="new")
    seconds = time.perf_counter() - start - loaded
    return {
        "load_s": loaded,
        "score_s": seconds,
        "cpu_s": _cpu() - cpu,
        "rows_per_s": len(q) / seconds,
        "leaked": leak.count,
        "peak_mib": _peak_mib(),
        **(_recall(np.load(data), q, leak, int(recall_queries)) if data else {}),
    }


def _recall(x: np.ndarray, q: np.ndarray, leak, count: int) -> dict:
    """Brute-force nearest reference row within the threshold of ``count`` sampled queries."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sample = np.sort(np.random.default_rng(7).choice(len(q), min(count, len(q)), replace=False))
    flagged = dict(zip(leak.positions, np.asarray(leak.distances, dtype=np.float32)))
    sq = np.einsum("ij,ij->i", xn, xn)
    found = total = wrong = 0
    for start in range(0, len(sample), 256):
        rows = sample[start : start + 256]
        d2 = qn[rows] @ xn.T
        d2 *= -2.0
        d2 += sq[None, :]
        d2 += np.einsum("ij,ij->i", qn[rows], qn[rows])[:, None]
        for i, r in enumerate(rows):
            cand = np.flatnonzero(d2[i] <= (THRESHOLD + 1e-3) ** 2)
            diff = xn[cand] - qn[r]
            dist = np.sqrt(np.einsum("ij,ij->i", diff, diff, dtype=np.float64)).astype(np.float32)
            within = dist[dist <= np.float32(THRESHOLD)]
            if len(within):
                total += 1
                found += int(r in flagged and abs(flagged[r] - within.min()) <= 1e-6)
            elif r in flagged:
                wrong += 1
    return {
        "recall": found / total if total else float("nan"),
        "recall_rows": total,
        "false_flags": wrong,
    }


def _run(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--backend", choices=["auto", "annoy", "both"], default="auto")
    parser.add_argument("--recall-queries", type=int, default=2000)
    parser.add_argument("--make", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--build", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--score", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        n, d, m = (int(v) for v in args.make[:3])
        print(json.dumps(_make(n, d, m, *args.make[3:])))
        return
    if args.build or args.score:
        print(json.dumps(_build(*args.build) if args.build else _score(*args.score)))
        return
    backends = ["annoy", "auto"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory() as tmp:
        data, queries = (os.path.join(tmp, f) for f in ("x.npy", "q.npy"))
        # generated in a subprocess: Linux children inherit the parent's max RSS on spawn
        _run("--make", str(args.n), str(args.d), str(args.queries), data, queries)
        print(f"shard {args.n:,} x {args.d}, threshold distance {THRESHOLD}", flush=True)
        for backend in backends:
            index_dir = os.path.join(tmp, f"index-{backend}")
            built = _run("--build", data, index_dir, backend)
            scored = _run("--score", queries, index_dir, data, str(args.recall_queries))
            _print(backend, args, built, scored)


def _print(backend: str, args: argparse.Namespace, built: dict, scored: dict) -> None:
    name = "cells" if backend == "auto" else backend
    print(f"  {name}: {built['settings']}")
    print(
        f"  build {built['build_s']:.2f} s (CPU {built['cpu_s']:.1f} s incl. save), save "
        f"{built['save_s']:.1f} s, on disk {built['disk_mib']:.0f} MiB, "
        f"peak RSS {built['peak_mib']:.0f} MiB"
    )
    print(
        f"  hashing rows for exact copies: {built['hash_cpu_s']:.2f} CPU s, "
        f"{built['copies']:,} copies"
    )
    print(
        f"  load {scored['load_s'] * 1e3:.0f} ms; score {args.queries:,} rows in "
        f"{scored['score_s']:.2f} s (CPU {scored['cpu_s']:.1f} s) = "
        f"{scored['rows_per_s']:,.0f} rows/s; {scored['leaked']:,} leaked "
        f"(>= {args.queries // 20:,} planted); peak RSS {scored['peak_mib']:.0f} MiB"
    )
    if "recall" in scored:
        print(
            f"  recall against brute force: {scored['recall']:.4f} of {scored['recall_rows']} "
            f"sampled queries with a reference row within the threshold; "
            f"{scored['false_flags']} flagged without one"
        )
    print(
        f"  build + score: {built['build_s'] + scored['score_s']:.2f} s (the target: 1.05 s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
