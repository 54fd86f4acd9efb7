"""Pieces shared by the framework integrations: pooling choices, reports, the leakage gate.

Framework-free (numpy only), so every integration can use it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neardup import DuplicatesResult, LeakageError, NeardupInputError

__all__ = [
    "DEFAULT_POOL",
    "POOL_CHOICES",
    "check_fail_above",
    "check_pool",
    "collector_options",
    "enforce_fail_above",
    "leakage_metrics",
    "missing_framework",
    "pool_array",
    "write_reports",
]

POOL_CHOICES = ("avg", "max", "flatten")
#: the pooling both callbacks use by default (benchmarks/bench_pooling.py chose it)
DEFAULT_POOL = "max"


def missing_framework(feature: str, extra: str, err: ImportError) -> ImportError:
    """An ImportError that names the feature and the install command (raise it ``from err``)."""
    return ImportError(
        f"{feature} needs the optional dependencies of neardup[{extra}] ({err}). "
        f'Install them with: pip install "neardup[{extra}]"'
    )


def check_pool(pool: Any) -> Any:
    """Validate ``pool=``: ``"avg"``, ``"max"``, ``"flatten"`` or a callable."""
    if callable(pool) or pool in POOL_CHOICES:
        return pool
    raise NeardupInputError(
        f"pool={pool!r} is not supported; use 'avg' or 'max' (pool the spatial/sequence axes "
        "of feature maps), 'flatten', or a callable(activation) -> (batch, features) array."
    )


def pool_array(values: np.ndarray, pool: Any, *, channels_last: bool) -> np.ndarray:
    """Pool a ``(B, ...)`` numpy activation to ``(B, features)``.

    For arrays with more than 2 dims, ``avg``/``max`` reduce every axis except the batch and
    channel axes (channel axis last for Keras/TF, second for PyTorch).
    """
    if callable(pool):
        return np.asarray(pool(values))
    if values.ndim <= 2 or pool == "flatten":
        return values.reshape(len(values), -1)
    axes = tuple(range(1, values.ndim - 1)) if channels_last else tuple(range(2, values.ndim))
    return values.mean(axis=axes) if pool == "avg" else values.max(axis=axes)


def check_fail_above(fail_above: float | None) -> float | None:
    """Validate ``fail_above=`` (a fraction in [0, 1] or None)."""
    if fail_above is None:
        return None
    if isinstance(fail_above, bool) or not isinstance(fail_above, (int, float)):
        raise NeardupInputError(f"fail_above must be a fraction in [0, 1], got {fail_above!r}.")
    if not 0 <= fail_above <= 1:
        raise NeardupInputError(
            f"fail_above={fail_above} is not a fraction in [0, 1] (0.01 means 1 %)."
        )
    return float(fail_above)


def leakage_metrics(result: DuplicatesResult, prefix: str = "neardup/") -> dict:
    """Scalar metrics of a combined result: the verdict, then each view's own figures.

    Every name carries its split, so a validation and a test analysis logged at the same step
    never collide. Per eval split (every split but the reference; the only split when there
    is one), from the combined verdict: ``neardup/<split>/duplicate_sets`` (sets with a
    member in that split) and, against the reference, ``neardup/<split>/leak_count`` and
    ``neardup/<split>/leak_fraction``; from each view (a model layer or ``input``):
    ``neardup/<view>/<split>/...`` with the same names and the view's ``threshold``.
    """
    metrics = _split_metrics(result, prefix, threshold=False)
    for view, own in result.views.items():
        metrics.update(_split_metrics(own, f"{prefix}{_safe(view)}/", threshold=True))
    return metrics


def _split_metrics(result: DuplicatesResult, base: str, *, threshold: bool) -> dict:
    metrics: dict[str, float] = {}
    splits = [s for s in result.split_sizes if s != result.reference] or list(result.split_sizes)
    for split in splits:
        sets = sum(1 for c in result.clusters if split in c.splits)
        metrics[f"{base}{split}/duplicate_sets"] = float(sets)
        if threshold:
            metrics[f"{base}{split}/threshold"] = float(result.threshold.value)
        leak = result.leakage.get(split)
        if leak is not None:
            metrics[f"{base}{split}/leak_count"] = float(leak.count)
            metrics[f"{base}{split}/leak_fraction"] = float(leak.fraction)
    return metrics


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name)


def write_reports(
    result: DuplicatesResult,
    directory: str | os.PathLike[str],
    *,
    samples: Mapping[str, Any] | Callable[[str, Any], Any] | None = None,
    stem: str = "neardup",
) -> list[Path]:
    """Write the combined verdict and one report per view (JSON, and HTML).

    Returns the written paths: ``<directory>/<stem>.json`` (the combined verdict, without the
    per-view results) and ``<directory>/<stem>-<view>.json`` per view (and ``.html``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    parts = {"": dataclasses.replace(result, views={})}
    parts.update({f"-{_safe(view)}": own for view, own in result.views.items()})
    for suffix, part in parts.items():
        base = directory / f"{stem}{suffix}"
        written.append(Path(f"{base}.json"))
        part.to_json(written[-1])
        written.append(Path(f"{base}.html"))
        part.to_html(written[-1], samples=samples)
    return written


def enforce_fail_above(result: DuplicatesResult, fail_above: float | None) -> None:
    """Raise :class:`neardup.LeakageError` when the combined verdict leaks above the limit."""
    if fail_above is None or not result.leakage:
        return
    fraction, split = max((leak.fraction, split) for split, leak in result.leakage.items())
    if fraction > fail_above:
        found = sorted({v for f in result.leakage[split].found_by for v in f})
        raise LeakageError(
            f"neardup: {100 * fraction:.2f} % of split {split!r} has a near-duplicate in the "
            f"reference split (found by {', '.join(found) or 'no view'}), above "
            f"fail_above={fail_above} ({100 * fail_above:.2f} %). See the report for the "
            "leaked samples."
        )


def collector_options(memory_budget: Any, spill_dir: Any) -> dict[str, Any]:
    """Validated ``ActivationCollector`` options shared by the callbacks (checked at init)."""
    from neardup.validators import check_memory_budget, check_spill_dir

    budget = check_memory_budget(memory_budget)
    return {"memory_budget": budget, "spill_dir": check_spill_dir(spill_dir, budget)}
