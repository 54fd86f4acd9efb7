"""kNN-graph step only: neardup's annoy path vs hnswlib, faiss and pynndescent, in one run.

Same data as bench_duplicates.py (``make_data``), row-normalised as the pipeline does. Each
method builds its index and queries all N rows for k=10 neighbours, then the result goes
through neardup's own post-processing (exact distances + sort, ``graph_from_indices``) so
every method ends with the same ``NeighborGraph`` the pipeline needs; "knn s" is the search
alone. Every method runs in its own subprocess (peak RSS is its own, input included), each at least
``--repeats`` times, interleaved, because timings on a shared machine are noisy; ratios are
against annoy's median in the same run.

Recall: within-threshold pair recall against exact search on ``--recall-queries`` sampled
rows, as bench_duplicates.py's ``_recall``: the threshold is the pipeline's default
``Relative(0.2)`` resolved on annoy's graph, the truth is each sampled row's (up to k)
nearest rows within it.

    python benchmarks/bench_backends.py              # 100k x 40
    python benchmarks/bench_backends.py --large      # also 1M x 64
    python benchmarks/bench_backends.py --methods annoy,hnsw-16 --repeats 3
    python benchmarks/bench_backends.py --only-large --methods annoy,hnsw-12,faiss-hnsw-8

All methods at 1M take well over 10 minutes (pynndescent and faiss-ivf scale worst); pick
them with ``--methods``. hnswlib and faiss are optional here (skipped when not installed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

K = 10
SEED = 0

#: name -> (library, parameters). hnswlib's num_threads and faiss's OpenMP threads: all CPUs.
METHODS: dict[str, tuple[str, dict]] = {
    "annoy": ("annoy", {}),
    "hnsw-8": ("hnswlib", {"M": 8, "ef_construction": 32, "ef": 16}),
    "hnsw-12": ("hnswlib", {"M": 12, "ef_construction": 64, "ef": 24}),
    "hnsw-16": ("hnswlib", {"M": 16, "ef_construction": 100, "ef": 40}),
    "faiss-hnsw-8": ("faiss-hnsw", {"M": 8, "ef_construction": 32, "ef": 16}),
    "faiss-hnsw": ("faiss-hnsw", {"M": 16, "ef_construction": 80, "ef": 32}),
    "faiss-ivf": ("faiss-ivf", {"nlist_per_sqrt_n": 4, "nprobe": 8}),
    "pynndescent": ("pynndescent", {}),
}


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + usage.ru_utime + usage.ru_stime


def _hnswlib(x: np.ndarray, k: int, p: dict) -> np.ndarray:
    import hnswlib

    n, d = x.shape
    index = hnswlib.Index(space="l2", dim=d)
    index.init_index(
        max_elements=n, M=p["M"], ef_construction=p["ef_construction"], random_seed=SEED
    )
    index.add_items(x, np.arange(n), num_threads=_cpus())
    index.set_ef(max(p["ef"], k + 1))
    found, _ = index.knn_query(x, k=k + 1, num_threads=_cpus())
    del index
    return found.astype(np.int64)


def _faiss_hnsw(x: np.ndarray, k: int, p: dict) -> np.ndarray:
    import faiss

    faiss.omp_set_num_threads(_cpus())
    index = faiss.IndexHNSWFlat(x.shape[1], p["M"])
    index.hnsw.efConstruction = p["ef_construction"]
    index.add(x)
    index.hnsw.efSearch = max(p["ef"], k + 1)
    _, found = index.search(x, k + 1)
    del index
    return found.astype(np.int64)


def _faiss_ivf(x: np.ndarray, k: int, p: dict) -> np.ndarray:
    import faiss

    faiss.omp_set_num_threads(_cpus())
    n, d = x.shape
    nlist = int(p["nlist_per_sqrt_n"] * np.sqrt(n))
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist)
    train = np.random.default_rng(SEED).choice(n, min(n, 50 * nlist), replace=False)
    index.cp.seed = SEED
    index.train(x[np.sort(train)])
    index.add(x)
    index.nprobe = p["nprobe"]
    _, found = index.search(x, k + 1)
    del index, quantizer
    return found.astype(np.int64)


def _pynndescent(x: np.ndarray, k: int, p: dict) -> np.ndarray:
    from pynndescent import NNDescent

    index = NNDescent(x, n_neighbors=k + 1, metric="euclidean", random_state=SEED, n_jobs=_cpus())
    found = index.neighbor_graph[0].astype(np.int64)
    del index
    return found


def _search(library: str, x: np.ndarray, k: int, p: dict) -> np.ndarray:
    """(N, k) neighbour indices excluding each row itself, -1 where missing."""
    from neardup.search import drop_self

    search = {
        "hnswlib": _hnswlib,
        "faiss-hnsw": _faiss_hnsw,
        "faiss-ivf": _faiss_ivf,
        "pynndescent": _pynndescent,
    }[library]
    return drop_self(search(x, k, p), k)


def _child(method: str, data: str, save: str | None) -> dict:
    from neardup.search import build_graph, graph_from_indices

    x = np.load(data)
    base = _peak_mb()
    library, params = METHODS[method]
    marks: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage.startswith("querying") and done == total:
            marks["knn"] = time.perf_counter()

    start = time.perf_counter()
    cpu = _cpu_seconds()
    if library == "annoy":
        graph = build_graph(x, K, backend="annoy", seed=SEED, progress=progress)
    else:
        indices = _search(library, x, K, params)
        marks["knn"] = time.perf_counter()
        graph = graph_from_indices(indices, x, method)
    out = {
        "method": method,
        "seconds": time.perf_counter() - start,
        "knn_seconds": marks.get("knn", float("nan")) - start,
        "cpu_seconds": _cpu_seconds() - cpu,
        "peak_mb": _peak_mb(),
        "peak_mb_above_input": _peak_mb() - base,
        "missing": int((graph.indices < 0).sum()),
    }
    if library == "annoy":
        from neardup._threshold import Relative

        out["threshold"] = Relative().resolve(graph, "row")
    if save:
        np.save(save, graph.indices)
    return out


def _truth(data: str, threshold: float, queries: int, save: str) -> None:
    """Each sampled row's (up to K) nearest other rows within ``threshold``, by exact search."""
    x = np.load(data)
    rows = np.random.default_rng(1).choice(len(x), queries, replace=False)
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64).astype(np.float32)
    truth = np.full((queries, K), -1, dtype=np.int64)
    step = max(1, (64 << 20) // (4 * len(x)))
    for start in range(0, queries, step):
        block = rows[start : start + step]
        d2 = x[block] @ x.T  # float32 screen with a generous margin, then exact distances
        d2 *= -2.0
        d2 += sq[None, :]
        d2 += sq[block, None]
        for i, r in enumerate(block):
            cand = np.flatnonzero(d2[i] <= (threshold + 1e-3) ** 2 + 1e-4)
            cand = cand[cand != r]
            dist = np.linalg.norm(x[cand].astype(np.float64) - x[r], axis=1)
            within = cand[dist <= threshold]
            best = within[np.argsort(dist[dist <= threshold], kind="stable")][:K]
            truth[start + i, : len(best)] = best
    np.savez(save, rows=rows, truth=truth)


def _recall(indices_file: str, truth_file: str) -> float:
    got = np.load(indices_file, mmap_mode="r")
    t = np.load(truth_file)
    found = total = 0
    for r, true in zip(t["rows"], t["truth"]):
        true = set(true[true >= 0].tolist())
        found += len(true & set(np.asarray(got[r]).tolist()))
        total += len(true)
    return found / total if total else float("nan")


def _spawn(*args: str) -> dict:
    cmd = [sys.executable, __file__, *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _available(library: str) -> bool:
    module = {"annoy": "annoy", "hnswlib": "hnswlib", "pynndescent": "pynndescent"}.get(
        library, "faiss"
    )
    import importlib.util

    # find_spec, not import: the parent must stay small (children inherit its max RSS)
    return importlib.util.find_spec(module) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="also run 1M x 64")
    parser.add_argument("--only-large", action="store_true", help="run 1M x 64 only")
    parser.add_argument("--size", help="one custom size instead, e.g. 20000x32")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--recall-queries", type=int, default=2000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--threshold", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "truth":
        _truth(args.data, args.threshold, args.recall_queries, args.save)
        print("{}")
        return
    if args.child:
        print(json.dumps(_child(args.child, args.data, args.save)))
        return

    methods = [m for m in args.methods.split(",") if m]
    if methods[0] != "annoy":  # annoy's graph sets the threshold and the reference time
        methods = ["annoy", *[m for m in methods if m != "annoy"]]
    for m in methods:
        if m not in METHODS:
            parser.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    skipped = [m for m in methods if not _available(METHODS[m][0])]
    methods = [m for m in methods if m not in skipped]
    if skipped:
        print(f"not installed, skipped: {', '.join(skipped)}")
    sizes = [] if args.only_large else [(100_000, 40)]
    sizes += [(1_000_000, 64)] if args.large or args.only_large else []
    if args.size:
        sizes = [tuple(int(v) for v in args.size.lower().split("x"))]
    print(f"{_cpus()} CPUs; k={K}; {args.repeats} interleaved runs per method, medians shown")
    for n, d in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "x.npy")
            # generated in a subprocess: Linux children inherit the parent's max RSS on spawn
            gen = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import numpy"
            gen += "; from bench_duplicates import make_data"
            gen += "; from neardup._normalize import normalize_inplace"
            gen += f"; numpy.save({data!r}, normalize_inplace(make_data({n}, {d}), 'row'))"
            subprocess.run([sys.executable, "-c", gen], check=True)
            runs: dict[str, list[dict]] = {m: [] for m in methods}
            recall: dict[str, float] = {}
            threshold = None
            for rep in range(args.repeats):
                for m in methods:
                    save = os.path.join(tmp, f"{m}.npy") if rep == 0 else None
                    extra = ["--save", save] if save else []
                    r = _spawn("--child", m, "--data", data, *extra)
                    runs[m].append(r)
                    print(f"  [{n:,}x{d} run {rep + 1}] {m}: {json.dumps(r)}", flush=True)
                    if m == "annoy" and threshold is None and "threshold" in r:
                        threshold = r["threshold"]
                if rep == 0 and threshold is not None:
                    truth = os.path.join(tmp, "truth.npz")
                    _spawn(
                        "--child", "truth", "--data", data, "--threshold", str(threshold),
                        "--recall-queries", str(args.recall_queries), "--save", truth,
                    )  # fmt: skip
                    for m in methods:
                        if os.path.exists(os.path.join(tmp, f"{m}.npy")):
                            recall[m] = _recall(os.path.join(tmp, f"{m}.npy"), truth)
        _table(n, d, methods, runs, recall, threshold)


def _table(n, d, methods, runs, recall, threshold) -> None:
    def med(m: str, key: str) -> float:
        vals = [r[key] for r in runs[m] if key in r]
        return statistics.median(vals) if vals else float("nan")

    base = med("annoy", "seconds")
    base_knn = med("annoy", "knn_seconds")
    print(f"\n{n:,} x {d}: threshold {threshold:.4g} (Relative(0.2) on annoy's graph)")
    print(
        f"{'method':>12} {'graph s':>8} {'knn s':>7} {'CPU s':>7} {'peak MiB':>9} "
        f"{'MiB>in':>7} {'recall':>7} {'x annoy':>8} {'knn x':>6}  runs (graph s)"
    )
    for m in methods:
        ok = [r for r in runs[m] if "error" not in r]
        if not ok:
            print(f"{m:>12} failed: {runs[m][0]['error']}")
            continue
        each = " ".join(f"{r['seconds']:.1f}" for r in ok)
        print(
            f"{m:>12} {med(m, 'seconds'):8.2f} {med(m, 'knn_seconds'):7.2f} "
            f"{med(m, 'cpu_seconds'):7.1f} {max(r['peak_mb'] for r in ok):9.0f} "
            f"{max(r['peak_mb_above_input'] for r in ok):7.0f} {recall.get(m, float('nan')):7.4f} "
            f"{base / med(m, 'seconds'):8.2f} {base_knn / med(m, 'knn_seconds'):6.2f}  {each}"
        )
    print("x annoy / knn x: annoy's median time / the method's (>1: faster than annoy)\n")


if __name__ == "__main__":
    main()
