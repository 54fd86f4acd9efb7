"""``Auto`` on clusters of varied density: where its power law fails, and what the re-cut does.

Synthetic rows around 200 centres whose spreads are drawn log-uniformly from 0.01 to 1
(``_clusters_of_varied_density`` of ``tests/test_multiview.py``): the natural nearest-neighbour
distances' low tail is far heavier than ``t ** m``. For each seed, 3,000 train + 1,000 test rows
without copies, then with 20 test rows replaced by train rows plus noise of 1e-4: the share of
natural rows below the power law's cut and the slope of their tail, the test rows flagged
without copies with the re-cut switched off and on, and whether exactly the 20 planted rows
are flagged (with the re-cut).

    python benchmarks/bench_auto_density.py            # seeds 2-21
    python benchmarks/bench_auto_density.py --seeds 2,10
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_multiview import _clusters_of_varied_density

import neardup
from neardup import _auto_threshold as auto


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=",".join(str(s) for s in range(2, 22)))
    args = parser.parse_args()
    recut = auto._recut_if_crowded
    seen = {}

    def observed(natural, anchor, value, bound, dimension, quantile, expected_ratio):
        crowded = max(1, int(np.count_nonzero(natural <= value)))
        seen["share"] = crowded / len(natural)
        seen["slope"] = math.log(quantile * len(natural) / crowded) / math.log(anchor / value)
        return recut(natural, anchor, value, bound, dimension, quantile, expected_ratio)

    print(
        "| seed | natural rows below the law's cut | their tail's slope | flagged, no re-cut "
        "| flagged | planted |"
    )
    print("|---:|---:|---:|---:|---:|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        x = _clusters_of_varied_density(seed)
        train, test = x[:3000], x[3000:].copy()
        auto._recut_if_crowded = lambda natural, anchor, value, bound, *rest: (value, bound)
        before = neardup.find_duplicates({"train": train, "test": test}, normalize=None)
        auto._recut_if_crowded = observed
        after = neardup.find_duplicates({"train": train, "test": test}, normalize=None)
        share, slope = seen["share"], seen["slope"]  # of the rows without copies
        rng = np.random.default_rng(seed + 10)
        slots, sources = rng.choice(1000, 20, replace=False), rng.choice(3000, 20, replace=False)
        test[slots] = train[sources] + rng.normal(scale=1e-4, size=(20, 16)).astype(np.float32)
        leaked = neardup.find_duplicates({"train": train, "test": test}, normalize=None)
        found, slots = set(leaked.leakage["test"].positions), set(slots.tolist())
        planted = f"{len(found & slots)} of 20, {len(found - slots)} other"
        print(
            f"| {seed} | {100 * share:.2f} % | {slope:.1f} | {before.leakage['test'].count} | "
            f"{after.leakage['test'].count} | {planted} |"
        )
    auto._recut_if_crowded = recut


if __name__ == "__main__":
    main()
