"""neardup.find_duplicates vs DNIKit's Duplicates.introspect on the same arrays, in one run.

Each method runs in its own subprocess (so peak memory is its own) on the same synthetic
activations: clustered data with realistic near-duplicates (noisy copies at several noise
levels, small shifts, exact copies), split 80/20 into train/test. Reported: wall time, the
time ratio DNIKit / neardup, peak RSS above the input data, and neardup's pair recall against
exact search for the pairs within its resolved threshold (on a sample of query rows).

    python benchmarks/bench_duplicates.py            # 100k x 40
    python benchmarks/bench_duplicates.py --large    # also 1M x 64 (several minutes)
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
    """Share of exact within-threshold pairs (from sampled query rows) that the graph found."""
    from neardup._normalize import normalize_inplace
    from neardup.search import build_graph

    s = result.settings
    xn = normalize_inplace(x.astype(np.float32, copy=True), s["normalize"])
    graph = build_graph(
        xn,
        s["k"],
        backend=s["backend"],
        n_trees=s["n_trees"],
        search_k=s["search_k"],
        seed=s["seed"],
    )
    t = result.threshold.value
    rows = np.random.default_rng(1).choice(len(xn), queries, replace=False)
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
            dist = np.linalg.norm(xn[cand].astype(np.float64) - xn[r], axis=1)
            within = cand[dist <= t]
            true = set(within[np.argsort(dist[dist <= t], kind="stable")][: s["k"]].tolist())
            if not true:
                continue
            got = set(graph.indices[r][graph.distances[r] <= t].tolist())
            found += len(true & got)
            total += len(true)
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
    parser.add_argument("--large", action="store_true", help="also run 1M x 64")
    parser.add_argument("--recall-queries", type=int, default=2000)
    parser.add_argument("--trees", type=int, help="neardup n_trees (default: its own)")
    parser.add_argument("--query-jobs", type=int, help="neardup query_jobs (default: its own)")
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
    options = {}
    if args.trees is not None:
        options["n_trees"] = args.trees
    if args.query_jobs is not None:
        options["query_jobs"] = args.query_jobs
    sizes = [(100_000, 40)] + ([(1_000_000, 64)] if args.large else [])
    print(
        f"{'size':>12} {'method':>8} {'seconds':>8} {'CPU s':>7} {'peak MB':>8} {'MB>in':>7} "
        f"{'recall':>7} {'ratio':>6}"
    )
    for n, d in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "x.npy")
            # generated in a subprocess: Linux children inherit the parent's max RSS on spawn
            gen = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import numpy"
            gen += "; from bench_duplicates import make_data"
            gen += f"; numpy.save({data!r}, make_data({n}, {d}))"
            subprocess.run([sys.executable, "-c", gen], check=True)
            ours = _run("neardup", n, d, args.recall_queries, options, data)
            theirs = _run("dnikit", n, d, 0, {}, data)
        ratio = theirs["seconds"] / ours["seconds"]
        for r in (theirs, ours):
            recall = f"{r['recall']:.4f}" if "recall" in r else "-"
            print(
                f"{n:>9,}x{d:<3} {r['method']:>8} {r['seconds']:8.1f} {r['cpu_seconds']:7.1f} "
                f"{r['peak_mb']:8.0f} {r['peak_mb_above_input']:7.0f} {recall:>7} "
                f"{ratio if r is ours else 1.0:6.2f}"
            )
        print(
            f"  neardup: {ours['sets']} sets, {ours['leaked']} test samples leaked, "
            f"threshold {ours['threshold']:.4g}; DNIKit (Slope): {theirs['sets']} sets"
        )


if __name__ == "__main__":
    main()
