"""neardup.find_duplicates vs DNIKit's Duplicates.introspect on the same arrays, in one run.

Each method runs in its own subprocess (so peak memory is its own) on the same synthetic
activations: clustered data with realistic near-duplicates (noisy copies at several noise
levels, small shifts, exact copies), split 80/20 into train/test. Reported: wall time, the
time ratio DNIKit / neardup, peak RSS above the input data, and neardup's pair recall against
exact search at its resolved threshold (on a sample of query rows: a pair is found when both
rows are in one duplicate set).

    python benchmarks/bench_duplicates.py            # 100k x 40
    python benchmarks/bench_duplicates.py --large    # also 1M x 64 and 1M x 512 (minutes)
    python benchmarks/bench_duplicates.py --wide     # also 60,000 x 3,072 (neardup only)
    python benchmarks/bench_duplicates.py --annoy    # neardup with Annoy() instead of Cells()
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

import numpy as np


def _load(n: int, d: int, data: str | None) -> np.ndarray:
    """The input, read from ``data`` (.npy written by the parent) so that generating it (whose
    float64 temporaries dwarf everything else at 1M rows) does not set the peak RSS."""
    return np.load(data) if data else make_data(n, d)


def make_data(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Clustered float32 activations with ~3 % near-duplicates of varied kinds."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(10, n // 100), d)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)]
    x += rng.normal(scale=0.5, size=(n, d)).astype(np.float32)
    m = n // 100
    targets = rng.choice(n, 3 * m, replace=False)
    sources = rng.integers(0, n, 3 * m)
    scale = np.linalg.norm(x, axis=1).mean() / np.sqrt(d)
    x[targets[:m]] = x[sources[:m]]  # exact copies
    x[targets[m : 2 * m]] = x[sources[m : 2 * m]] + rng.normal(
        scale=0.01 * scale, size=(m, d)
    )  # noisy copies
    x[targets[2 * m :]] = (
        np.roll(x[sources[2 * m :]], 1, axis=1) * 0.05 + 0.95 * x[sources[2 * m :]]
    )  # small shifts
    return x


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _child(
    method: str, n: int, d: int, recall_queries: int, options: dict, data: str | None = None
) -> dict:
    x = _load(n, d, data)
    base = _peak_mb()
    split = int(0.8 * n)
    start = time.perf_counter()
    cpu_start = time.process_time() + _children_cpu()
    out: dict = {"method": method}
    if method == "dnikit":
        from dnikit.base import Batch
        from dnikit.introspectors import Duplicates

        def producer(batch_size):
            for i in range(0, n, batch_size):
                yield Batch({"layer": x[i : i + batch_size]})

        result = Duplicates.introspect(producer, batch_size=1024)
        out["sets"] = len(result.results["layer"])
    else:
        import neardup

        options = dict(options)
        if isinstance(options.get("backend"), dict):  # {"name": "Annoy", "n_trees": 6, ...}
            spec = dict(options["backend"])
            options["backend"] = getattr(neardup, spec.pop("name"))(**spec)
        result = neardup.find_duplicates({"train": x[:split], "test": x[split:]}, **options)
        out["sets"] = len(result.clusters)
        out["leaked"] = result.leakage["test"].count
        out["threshold"] = result.threshold.value
    out["seconds"] = time.perf_counter() - start
    out["cpu_seconds"] = time.process_time() - cpu_start + _children_cpu()
    out["peak_mb_above_input"] = _peak_mb() - base
    out["peak_mb"] = _peak_mb()
    out["input_mb"] = x.nbytes / 2**20
    if method == "neardup" and recall_queries:
        out["recall"] = _recall(x, result, recall_queries)
    return out


def _recall(x: np.ndarray, result, queries: int) -> float:
    """Pair recall against exact search at the result's own resolved threshold.

    For sampled query rows, every row within the threshold is found by brute force; a pair
    counts as found when both rows are in the same duplicate set of the result.
    """
    from neardup._normalize import normalize_inplace

    s = result.settings
    if s.get("reduce"):
        return float("nan")  # pairs live in the reduced space: not comparable here
    xn = normalize_inplace(x.astype(np.float32, copy=True), s["normalize"])
    t = result.threshold.value
    set_of = np.full(len(xn), -1, dtype=np.int64)
    offsets = np.cumsum([0, *result.split_sizes.values()])
    starts = dict(zip(result.split_sizes, offsets))
    for number, dup in enumerate(result.clusters):
        rows = [starts[sp] + p for sp, p in zip(dup.splits, dup.positions)]
        set_of[rows] = number
    rows = np.random.default_rng(1).choice(len(xn), min(queries, len(xn)), replace=False)
    sq = np.einsum("ij,ij->i", xn, xn, dtype=np.float64).astype(np.float32)
    found = total = 0
    step = max(1, (64 << 20) // (4 * len(xn)))
    for start in range(0, len(rows), step):
        block = rows[start : start + step]
        # float32 screen (|a|^2 + |b|^2 - 2ab, generous margin), then exact distances
        d2 = xn[block] @ xn.T
        d2 *= -2.0
        d2 += sq[None, :]
        d2 += sq[block, None]
        for i, r in enumerate(block):
            cand = np.flatnonzero(d2[i] <= (t + 1e-3) ** 2 + 1e-4)
            cand = cand[cand != r]
            diff = xn[cand] - xn[r]
            dist = np.sqrt(np.einsum("ij,ij->i", diff, diff, dtype=np.float64))
            within = cand[dist.astype(np.float32) <= np.float32(t)]
            total += len(within)
            found += int(np.count_nonzero((set_of[within] == set_of[r]) & (set_of[r] >= 0)))
    return found / total if total else float("nan")


def _run(method: str, n: int, d: int, recall_queries: int, options: dict, data: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        method,
        "--n",
        str(n),
        "--d",
        str(d),
        "--recall-queries",
        str(recall_queries),
        "--options",
        json.dumps(options),
        "--data",
        data,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="also run 1M x 64 and 1M x 512")
    parser.add_argument(
        "--wide", action="store_true", help="also 60,000 x 3,072 (neardup only)"
    )
    parser.add_argument(
        "--sizes", help="comma-separated NxD to run instead (e.g. 100000x40,1000000x64)"
    )
    parser.add_argument("--no-dnikit", action="store_true", help="skip DNIKit (ratio: -)")
    parser.add_argument(
        "--annoy", action="store_true", help="neardup with Annoy() instead of the default Cells()"
    )
    parser.add_argument("--recall-queries", type=int, default=2000)
    parser.add_argument("--trees", type=int, help="with --annoy: n_trees (default: its own)")
    parser.add_argument("--query-jobs", type=int, help="with --annoy: query_jobs")
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=["neardup", "dnikit"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=100_000, help=argparse.SUPPRESS)
    parser.add_argument("--d", type=int, default=40, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        options = json.loads(args.options)
        print(
            json.dumps(_child(args.child, args.n, args.d, args.recall_queries, options, args.data))
        )
        return
    options: dict = {}
    if args.annoy:
        spec = {"name": "Annoy"}
        if args.trees is not None:
            spec["n_trees"] = args.trees
        if args.query_jobs is not None:
            spec["query_jobs"] = args.query_jobs
        options["backend"] = spec
    if args.sizes:
        sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    else:
        sizes = [(100_000, 40)] + ([(1_000_000, 64)] if args.large else [])
        sizes += [(60_000, 3_072)] if args.wide else []
        sizes += [(1_000_000, 512)] if args.large else []
    print(
        f"{'size':>12} {'method':>8} {'seconds':>8} {'CPU s':>7} {'peak MB':>8} {'MB>in':>7} "
        f"{'recall':>7} {'ratio':>6}"
    )
    for n, d in sizes:
        with_dnikit = not args.no_dnikit and d <= 64
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "x.npy")
            # generated in a subprocess: Linux children inherit the parent's max RSS on spawn
            gen = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import numpy"
            gen += "; from bench_duplicates import make_data"
            gen += f"; numpy.save({data!r}, make_data({n}, {d}))"
            subprocess.run([sys.executable, "-c", gen], check=True)
            ours = _run("neardup", n, d, args.recall_queries, options, data)
            theirs = _run("dnikit", n, d, 0, {}, data) if with_dnikit else None
        for r in (theirs, ours):
            if r is None:
                continue
            recall = f"{r['recall']:.4f}" if "recall" in r else "-"
            ratio = "-" if theirs is None else f"{theirs['seconds'] / r['seconds']:6.2f}"
            print(
                f"{n:>9,}x{d:<5} {r['method']:>8} {r['seconds']:8.1f} {r['cpu_seconds']:7.1f} "
                f"{r['peak_mb']:8.0f} {r['peak_mb_above_input']:7.0f} {recall:>7} {ratio:>6}",
                flush=True,
            )
        print(
            f"  neardup: {ours['sets']} sets, {ours['leaked']} test samples leaked, "
            f"threshold {ours['threshold']:.4g}"
            + (f"; DNIKit (Slope): {theirs['sets']} sets" if theirs else ""),
            flush=True,
        )


if __name__ == "__main__":
    main()
