"""Send an analysis to the trainer's loggers, beyond the scalars every logger takes.

- ``TensorBoardLogger`` (any logger whose ``experiment`` is a ``SummaryWriter``): the
  nearest-neighbour distance histogram (``add_histogram_raw``) and the summary as text.
- Loggers that store artifacts (``MLFlowLogger``: ``experiment.log_artifact(run_id, path)``):
  the JSON and HTML reports, under ``neardup/``.

Scalars go through ``log_metrics``/``pl_module.log`` in the callback, so ``CSVLogger`` and
every other logger get them as before. Rank zero only.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neardup import DuplicatesResult

__all__ = ["publish_to_loggers"]


def publish_to_loggers(
    loggers: Sequence[Any],
    results: Mapping[str, DuplicatesResult],
    report_paths: Sequence[Path],
    step: int,
) -> None:
    """Histogram + summary text to TensorBoard writers; report files to artifact stores."""
    for logger in loggers:
        experiment = _experiment(logger)
        if experiment is None:
            continue
        if hasattr(experiment, "add_histogram_raw") and hasattr(experiment, "add_text"):
            _to_tensorboard(experiment, results, step)
        run_id = getattr(logger, "run_id", None)
        if run_id is not None and hasattr(experiment, "log_artifact"):
            for path in report_paths:
                experiment.log_artifact(run_id, str(path), artifact_path="neardup")


def _experiment(logger: Any) -> Any:
    try:
        return logger.experiment
    except Exception:  # a logger that cannot start its backend here has nothing to take
        return None


def tag_of(result: DuplicatesResult, view: str, what: str) -> str:
    """``neardup/<eval splits>/<what>`` for the combined verdict (``view=""``), else
    ``neardup/<view>/<splits>/<what>``."""
    splits = [s for s in result.split_sizes if s != result.reference] or list(result.split_sizes)
    base = f"neardup/{view}/" if view else "neardup/"
    return f"{base}{'+'.join(splits)}/{what}"


def _to_tensorboard(writer: Any, results: Mapping[str, DuplicatesResult], step: int) -> None:
    for layer, result in results.items():
        histogram = result.histogram or {}
        edges = list(histogram.get("edges") or [])
        within = list(histogram.get("within") or [])
        cross = list(histogram.get("cross") or [])
        counts = [float(a + b) for a, b in zip(within, cross)]
        total = sum(counts)
        if len(edges) >= 2 and total > 0:
            centers = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
            writer.add_histogram_raw(
                tag_of(result, layer, "nearest_neighbor_distance"),
                min=float(edges[0]),
                max=float(edges[-1]),
                num=total,
                sum=float(sum(c * n for c, n in zip(centers, counts))),
                sum_squares=float(sum(c * c * n for c, n in zip(centers, counts))),
                bucket_limits=[float(e) for e in edges[1:]],
                bucket_counts=counts,
                global_step=step,
            )
        text = "\n".join("    " + line for line in result.summary().splitlines())
        writer.add_text(tag_of(result, layer, "summary"), text, global_step=step)
        writer.flush()
