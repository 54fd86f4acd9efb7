"""The one post-analysis path of every integration: metrics, reports, summaries, the gate.

The callbacks differ only in how they collect activations; once they hold the combined
:class:`~neardup.DuplicatesResult` of every view (layers and the input view, ``views`` holding
each one's own result) they call :func:`finish` and act on its :class:`Outcome` (log the
metrics their own way, raise :meth:`Outcome.raise_for_failure`).

Console messages go through the ``neardup`` logger (:func:`announce`), which prints to
standard output by default, as the frameworks' own loggers do; configure it (or silence it:
``logging.getLogger("neardup").setLevel(logging.WARNING)``) like any logger. Callers send
them from rank zero only.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neardup import DuplicatesResult, LeakageError

from ._common import enforce_fail_above, leakage_metrics, write_reports

__all__ = ["Outcome", "announce", "finish"]

LOGGER_NAME = "neardup"


class _StdoutHandler(logging.StreamHandler):
    """Writes to the current ``sys.stdout`` (so redirections and captures see the messages)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def _logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:  # configured by the user: leave it as it is
        handler = _StdoutHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False  # printed once, not again by the root logger
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    return logger


def announce(message: str) -> None:
    """Show ``message`` to the user (INFO on the ``neardup`` logger; call on rank zero)."""
    _logger().info(message)


@dataclass
class Outcome:
    """What :func:`finish` did: plain data, safe to broadcast between ranks.

    Attributes
    ----------
    metrics:
        Scalar metrics (``neardup/<split>/leak_fraction`` …, see ``leakage_metrics``).
    report_paths:
        The JSON (and HTML) reports written, in order.
    summary:
        The combined result's ``summary()`` text.
    failure:
        The fail-gate message when a split leaks above ``fail_above``, else ``None``.
    """

    metrics: dict[str, float]
    report_paths: list[Path] = field(default_factory=list)
    summary: str = ""
    failure: str | None = None

    @property
    def text(self) -> str:
        """The summaries, then the report paths: what a verbose callback shows."""
        text = self.summary
        if self.report_paths:
            text += f"\n  reports: {', '.join(str(p) for p in self.report_paths)}"
        return text

    def raise_for_failure(self) -> None:
        """Raise :class:`neardup.LeakageError` when the fail gate tripped."""
        if self.failure is not None:
            raise LeakageError(self.failure)


def finish(
    result: DuplicatesResult,
    *,
    report_dir: str | os.PathLike[str] | None,
    stem: str,
    samples: Mapping[str, Any] | Callable[[str, Any], Any] | None = None,
    fail_above: float | None = None,
    gate: bool = True,
    verbose: bool = False,
) -> Outcome:
    """Metrics, reports (when ``report_dir`` is given), summaries and the fail-gate outcome.

    Parameters
    ----------
    result:
        The combined result of one analysis (its ``views`` hold each view's own result).
    report_dir, stem, samples:
        Reports go to ``<report_dir>/<stem>.json`` / ``.html`` (the combined verdict) and
        ``<stem>-<view>.json`` / ``.html`` per view (see ``write_reports``); ``None`` writes
        none.
    fail_above, gate:
        The largest tolerated leaked fraction of any eval split; checked only when ``gate``
        (e.g. Lightning checks it at the end of fitting, not after every epoch).
    verbose:
        Announce the summaries and report paths (see :func:`announce`).

    Returns
    -------
    Outcome
        The caller raises with :meth:`Outcome.raise_for_failure` (after its own logging).
    """
    failure = None
    if gate:
        try:
            enforce_fail_above(result, fail_above)
        except LeakageError as err:
            failure = str(err)
    report_paths = (
        write_reports(result, report_dir, samples=samples, stem=stem)
        if report_dir is not None
        else []
    )
    outcome = Outcome(
        metrics=leakage_metrics(result),
        report_paths=report_paths,
        summary=result.summary(),
        failure=failure,
    )
    if verbose:
        announce(outcome.text)
    return outcome
