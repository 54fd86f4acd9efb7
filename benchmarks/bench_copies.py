"""Hashing exact copies first (``dedupe=True``, the default) vs indexing every row in annoy.

Data: the benchmark's clustered activations in which a share of the rows is replaced by exact
copies of other rows (scraped data: blank images, repeated frames, boilerplate text), some in
large groups. Each setting runs in its own subprocess, ``--repeats`` times interleaved (the
median run is shown); reported: wall and CPU seconds, the ratio, the duplicate sets, the rows
in them and the leaked test samples each setting found.

    python benchmarks/bench_copies.py                 # 200k x 64, 0 % / 10 % / 30 % copies
    python benchmarks/bench_copies.py --n 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_duplicates import _children_cpu, make_data


def with_copies(n: int, d: int, share: float, seed: int = 0) -> np.ndarray:
    """``make_data`` with ``share`` of its rows overwritten by exact copies of other rows.

    Half of the copies repeat one of 20 rows (large groups), the rest repeat random rows.
    """
    x = make_data(n, d, seed)
    rng = np.random.default_rng(seed + 1)
    m = int(share * n)
    targets = rng.choice(n, m, replace=False)
    popular = rng.choice(n, 20, replace=False)
    sources = np.concatenate([popular[rng.integers(0, 20, m // 2)], rng.integers(0, n, m - m // 2)])
    x[targets] = x[sources]
    return x


def _child(data: str, dedupe: bool) -> dict:
    import neardup

    x = np.load(data)
    split = int(0.8 * len(x))
    start, cpu = time.perf_counter(), time.process_time() + _children_cpu()
    result = neardup.find_duplicates({"train": x[:split], "test": x[split:]}, dedupe=dedupe)
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() + _children_cpu() - cpu,
        "sets": len(result.clusters),
        "members": sum(c.size for c in result.clusters),
        "leaked": result.leakage["test"].count,
    }


def _median(runs: list[dict]) -> dict:
    """The run with the median wall time (its other figures come with it)."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--shares", default="0,0.1,0.3")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs; medians shown")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dedupe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, bool(args.dedupe))))
        return
    print(
        f"{'size':>12} {'copies':>6} {'dedupe':>6} {'seconds':>8} {'CPU s':>7} {'sets':>7} "
        f"{'in sets':>8} {'leaked':>7} {'ratio':>6}"
    )
    for share in (float(s) for s in args.shares.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "x.npy")
            np.save(data, with_copies(args.n, args.d, share))
            runs: dict[int, list[dict]] = {0: [], 1: []}
            for _ in range(args.repeats):
                for dedupe in (0, 1):
                    cmd = [sys.executable, __file__, "--child", data, "--dedupe", str(dedupe)]
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                    runs[dedupe].append(json.loads(out.strip().splitlines()[-1]))
        runs = {dedupe: _median(rs) for dedupe, rs in runs.items()}
        for dedupe, r in runs.items():
            ratio = runs[0]["seconds"] / r["seconds"]
            print(
                f"{args.n:>9,}x{args.d:<3} {share:>6.0%} {'yes' if dedupe else 'no':>6} "
                f"{r['seconds']:8.1f} {r['cpu_seconds']:7.1f} {r['sets']:>7} "
                f"{r['members']:>8} {r['leaked']:>7} {ratio:6.2f}"
            )


if __name__ == "__main__":
    main()
