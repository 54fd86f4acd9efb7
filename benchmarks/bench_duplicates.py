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
    python benchmarks/bench_duplicates.py --sizes 10000000x64 --no-dnikit --mmap
        # the input read from a .npy on disk (np.load(mmap_mode="r")), streamed

Inputs above 2M rows or 256M values (1M x 512) are generated block by block straight into the
.npy (same kind of data; ``make_data``'s float64 temporaries would need 8 GB at 10M rows).
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


def _load(n: int, d: int, data: str | None, mmap: bool = False) -> np.ndarray:
    """The input, read from ``data`` (.npy written by the parent) so that generating it (whose
    float64 temporaries dwarf everything else at 1M rows) does not set the peak RSS; with
    ``mmap``, memory-mapped read-only (``np.load(mmap_mode="r")``)."""
    if data:
        return np.load(data, mmap_mode="r" if mmap else None)
    return make_data(n, d)


#: above this many rows, or values, the data are generated block by block into the file.
_IN_MEMORY_ROWS = 2_000_000
_IN_MEMORY_VALUES = 256_000_000
_GEN_BLOCK = 1 << 20


def write_data(n: int, d: int, path: str, seed: int = 0) -> None:
    """``make_data(n, d)`` saved to ``path``; above 2M rows the same kind of data (clusters,
    1 % exact, 1 % noisy, 1 % shifted copies) is generated block by block into the file."""
    if n <= _IN_MEMORY_ROWS and n * d <= _IN_MEMORY_VALUES:
        np.save(path, make_data(n, d, seed))
        return
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(10, n // 100), d)).astype(np.float32)
    for start in range(0, n, _GEN_BLOCK):
        m = min(_GEN_BLOCK, n - start)
        block = centers[rng.integers(0, len(centers), m)]
        block += rng.normal(scale=0.5, size=(m, d)).astype(np.float32)
        out[start : start + m] = block
    m = n // 100
    targets = rng.choice(n, 3 * m, replace=False)
    sources = rng.integers(0, n, 3 * m)
    first = np.asarray(out[:_GEN_BLOCK])
    scale = float(np.linalg.norm(first, axis=1).mean() / np.sqrt(d))
    for kind in range(3):
        for start in range(kind * m, (kind + 1) * m, _GEN_BLOCK):
            stop = min((kind + 1) * m, start + _GEN_BLOCK)
            src = np.asarray(out[np.sort(sources[start:stop])])
            order = np.argsort(sources[start:stop], kind="stable")
            src_rows = np.empty_like(src)
            src_rows[order] = src
            if kind == 1:
                src_rows += rng.normal(scale=0.01 * scale, size=src_rows.shape).astype(np.float32)
            elif kind == 2:
                src_rows = np.roll(src_rows, 1, axis=1) * 0.05 + 0.95 * src_rows
            out[targets[start:stop]] = src_rows
    out.flush()
    del out


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
    method: str,
    n: int,
    d: int,
    recall_queries: int,
    options: dict,
    data: str | None = None,
    mmap: bool = False,
) -> dict:
    x = _load(n, d, data, mmap)
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
        out["margin"] = result.settings.get("margin_used")
    out["seconds"] = time.perf_counter() - start
    out["cpu_seconds"] = time.process_time() - cpu_start + _children_cpu()
    out["peak_mb_above_input"] = _peak_mb() - base
    out["peak_mb"] = _peak_mb()
    out["input_mb"] = x.nbytes / 2**20
    if method == "neardup" and recall_queries:
        out["recall"] = _recall(x, result, recall_queries)
    return out


def _recall(x: np.ndarray, result, queries: int) -> float:
    """Pair recall against exact search at the result's own resolved threshold (NaN where
    there is no pair or the result's pairs live in a reduced space): see :func:`pair_counts`."""
    found, total = pair_counts(x, result, queries)
    return found / total if total else float("nan")


def pair_counts(x: np.ndarray, result, queries: int) -> tuple[int, int]:
    """``(found, total)`` pairs of sampled query rows within the result's own resolved
    threshold: every row within it is found by brute force, and a pair counts as found when
    both rows are in the same duplicate set of the result. ``(0, 0)`` when the result's pairs
    live in a reduced space (not comparable here).
    """
    from neardup._normalize import normalize_inplace

    s = result.settings
    if s.get("reduce"):
        return 0, 0  # pairs live in the reduced space: not comparable here
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
    q, sq_q = xn[rows], sq[rows]
    pair_q, pair_r = [], []
    # blocked over the rows and the queries (~256 MB of products at a time, any N)
    ref_step = 1 << 18
    q_step = max(1, (256 << 20) // (4 * ref_step))
    for r0 in range(0, len(xn), ref_step):
        block = xn[r0 : r0 + ref_step]
        for q0 in range(0, len(rows), q_step):
            # float32 screen (|a|^2 + |b|^2 - 2ab, generous margin), then exact distances
            d2 = q[q0 : q0 + q_step] @ block.T
            d2 *= -2.0
            d2 += sq[None, r0 : r0 + ref_step]
            d2 += sq_q[q0 : q0 + q_step, None]
            a, c = np.nonzero(d2 <= (t + 1e-3) ** 2 + 1e-4)
            a, c = a + q0, c + r0
            keep = c != rows[a]
            a, c = a[keep], c[keep]
            diff = xn[c] - q[a]
            dist = np.sqrt(np.einsum("ij,ij->i", diff, diff, dtype=np.float64))
            within = dist.astype(np.float32) <= np.float32(t)
            pair_q.append(rows[a[within]])
            pair_r.append(c[within])
    pq, pr = np.concatenate(pair_q), np.concatenate(pair_r)
    found = int(np.count_nonzero((set_of[pq] == set_of[pr]) & (set_of[pq] >= 0)))
    return found, len(pq)


def compile_neardup() -> None:
    """Byte-compile the ``neardup`` package, as ``pip install`` does for an installed one.

    DNIKit runs from its installed ``.pyc`` files; a source tree run with
    ``PYTHONDONTWRITEBYTECODE=1`` (set on the project's machines) would otherwise compile every
    neardup module again in each run (measured 0.18-0.23 against 0.06-0.07 CPU s for
    ``import neardup``). Writes ``__pycache__`` beside the sources (ignored by git).
    """
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("neardup")
    if spec is not None and spec.origin:
        compileall.compile_dir(os.path.dirname(spec.origin), quiet=1)


def _run(
    method: str, n: int, d: int, recall_queries: int, options: dict, data: str, mmap: bool = False
) -> dict:
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
    ] + (["--mmap"] if mmap else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="also run 1M x 64 and 1M x 512")
    parser.add_argument("--wide", action="store_true", help="also 60,000 x 3,072 (neardup only)")
    parser.add_argument(
        "--sizes", help="comma-separated NxD to run instead (e.g. 100000x40,1000000x64)"
    )
    parser.add_argument("--no-dnikit", action="store_true", help="skip DNIKit (ratio: -)")
    parser.add_argument(
        "--annoy", action="store_true", help="neardup with Annoy() instead of the default Cells()"
    )
    parser.add_argument("--recall-queries", type=int, default=2000)
    parser.add_argument(
        "--mmap", action="store_true", help="neardup reads the input as a memmap of the .npy"
    )
    parser.add_argument(
        "--tmp", help="directory for the generated .npy (default: the system's temporary one)"
    )
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
            json.dumps(
                _child(
                    args.child, args.n, args.d, args.recall_queries, options, args.data, args.mmap
                )
            )
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
    compile_neardup()
    print(
        f"{'size':>12} {'method':>8} {'seconds':>8} {'CPU s':>7} {'peak MB':>8} {'MB>in':>7} "
        f"{'recall':>7} {'ratio':>6}"
    )
    for n, d in sizes:
        with_dnikit = not args.no_dnikit and d <= 64
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            data = os.path.join(tmp, "x.npy")
            # generated in a subprocess: Linux children inherit the parent's max RSS on spawn
            gen = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import numpy"
            gen += "; from bench_duplicates import write_data"
            gen += f"; write_data({n}, {d}, {data!r})"
            subprocess.run([sys.executable, "-c", gen], check=True)
            ours = _run("neardup", n, d, args.recall_queries, options, data, args.mmap)
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
            + (f", spill margin {ours['margin']:g} x threshold" if ours.get("margin") else "")
            + (f"; DNIKit (Slope): {theirs['sets']} sets" if theirs else ""),
            flush=True,
        )


if __name__ == "__main__":
    main()
