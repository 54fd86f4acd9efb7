"""The cell engine on Ray: per-cell costs, replicated rows, merge cost, 1 vs 2 local workers.

Each configuration runs in a fresh process (a process attaches to one Ray at a time):

- ``serial``: ``neardup.find_duplicates`` with ``Cells()`` in this process (the reference);
- ``ray-1`` / ``ray-2``: the same with ``Cells(executor=RayExecutor())`` on a local
  ``ray.init(num_cpus=1 | 2)``: one Ray task per cell;
- ``ray-2x8``: 2 CPUs, ``RayExecutor(tasks_per_call=8)``: 8 cells per Ray task.

Per cell it records the rows (primary and spilled), the join time inside the task and the
pairs found; it reports the replication factor (routed entries / N), the driver's merge time
(``merge_pairs`` over all cells' pairs) and checks that every run gives the serial result.

Run: python benchmarks/bench_ray.py [--n 200000] [--d 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_duplicates import make_data


def _timed_join(fn, task):
    start = time.perf_counter()
    pairs = fn(task)
    return {
        "seconds": time.perf_counter() - start,
        "rows": len(task.row_ids),
        "primary": int(task.n_primary),
        "pairs": _found(pairs),
    }, pairs


def _found(part) -> int:
    """Pairs of a joined cell, or the unmeasured candidate pairs ``(i, j)`` of a cell screened
    through a projection (``CellTask.measure`` False: the driver measures them)."""
    return len(part[0]) if isinstance(part, tuple) else len(part)


class _Recording:
    """Wraps an executor: each task's own time, rows and pairs, measured where it runs."""

    def __init__(self, inner):
        import functools

        self.inner = inner
        self.cells: list[dict] = []
        self.parts: list = []
        self._wrap = functools.partial

    def map(self, fn, tasks):
        for stats, pairs in self.inner.map(self._wrap(_timed_join, fn), tasks):
            self.cells.append(stats)
            self.parts.append(pairs)
            yield pairs


def _child(mode: str, n: int, d: int, seed: int) -> dict:
    import neardup
    from neardup.search import SerialExecutor, merge_pairs

    x = make_data(n, d, seed)
    data = {"train": x[: n * 4 // 5], "test": x[n * 4 // 5 :]}
    out: dict = {"mode": mode}
    if mode == "serial":
        inner = SerialExecutor()
    else:
        import ray

        from neardup.integrations.ray import RayExecutor

        start = time.perf_counter()
        cpus, _, per_call = mode.removeprefix("ray-").partition("x")
        ray.init(num_cpus=int(cpus), include_dashboard=False, log_to_driver=False)
        out["ray_init_s"] = time.perf_counter() - start
        inner = RayExecutor(tasks_per_call=int(per_call or 1))
        # warm the workers (process start, imports) outside the timed run
        list(inner.map(abs, range(8)))
    recorder = _Recording(inner)
    start = time.perf_counter()
    result = neardup.find_duplicates(data, backend=neardup.Cells(executor=recorder))
    out["total_s"] = time.perf_counter() - start
    start = time.perf_counter()
    # screened cells return candidates (measured by the driver, inside find_duplicates)
    merged = merge_pairs([p for p in recorder.parts if not isinstance(p, tuple)])
    candidates = [p for p in recorder.parts if isinstance(p, tuple)]
    if candidates:
        keys = np.concatenate([i * np.int64(n) + j for i, j in candidates])
        out["candidates"] = len(np.unique(keys))
    out["merge_s"] = time.perf_counter() - start
    out["pairs"] = len(merged)
    cells = recorder.cells
    out["cells"] = len(cells)
    out["join_s_sum"] = sum(c["seconds"] for c in cells)
    per_cell = sorted(c["seconds"] for c in cells)
    out["join_ms_median"] = 1000 * statistics.median(per_cell)
    out["join_ms_p90"] = 1000 * per_cell[int(0.9 * (len(per_cell) - 1))]
    out["rows_per_cell_median"] = statistics.median(c["rows"] for c in cells)
    out["replication"] = sum(c["rows"] for c in cells) / n
    out["threshold"] = result.threshold.value
    out["sets"] = len(result.clusters)
    out["leaked"] = result.leakage["test"].count
    out["digest"] = hash(json.dumps(result.to_dict(), sort_keys=True, default=str))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.n, args.d, args.seed)))
        return
    runs: dict[str, list[dict]] = {}
    env = {**os.environ, "PYTHONHASHSEED": "0", "RAY_DEDUP_LOGS": "0"}
    for _ in range(args.repeat):
        for mode in ("serial", "ray-1", "ray-2", "ray-2x8"):
            cmd = [sys.executable, __file__, "--child", mode, "--n", str(args.n)]
            cmd += ["--d", str(args.d), "--seed", str(args.seed)]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            runs.setdefault(mode, []).append(json.loads(done.stdout.strip().splitlines()[-1]))
    digests = {r["digest"] for rs in runs.values() for r in rs}
    first = runs["serial"][0]
    print(f"{args.n:,} x {args.d}, {args.repeat} runs per mode, medians (shared 2-vCPU machine)")
    print(
        f"cells {first['cells']}, median {first['rows_per_cell_median']:.0f} rows per cell, "
        f"replication {first['replication']:.2f}x (routed entries / N), "
        f"{first['pairs']:,} pairs joined in cells, {first.get('candidates', 0):,} screened "
        f"candidates, {first['sets']:,} sets, {first['leaked']:,} leaked"
    )
    print("| mode | total s | joins (sum of tasks) s | per cell median / p90 ms | merge s |")
    print("|---|---|---|---|---|")
    for mode, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0] if k not in ("mode",)}
        print(
            f"| {mode} | {med['total_s']:.2f} | {med['join_s_sum']:.2f} | "
            f"{med['join_ms_median']:.1f} / {med['join_ms_p90']:.1f} | {med['merge_s']:.3f} |"
        )
    t1 = statistics.median(r["total_s"] for r in runs["ray-1"])
    t2 = statistics.median(r["total_s"] for r in runs["ray-2"])
    print(f"speed-up ray-1 -> ray-2: {t1 / t2:.2f}x")
    t8 = statistics.median(r["total_s"] for r in runs["ray-2x8"])
    print(f"speed-up ray-1 -> ray-2x8: {t1 / t8:.2f}x")
    inits = [r["ray_init_s"] for m in ("ray-1", "ray-2", "ray-2x8") for r in runs[m]]
    print(f"ray.init median {statistics.median(inits):.1f} s")
    print(f"identical results in every run: {len(digests) == 1}")


if __name__ == "__main__":
    main()
