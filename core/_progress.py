"""Progress bars through ``tqdm``: one bar per stage of a long run.

Every long step of neardup reports ``progress(stage, done, total)``. :class:`ProgressBars` turns
these calls into ``tqdm.auto`` bars: a widget in Jupyter, a live bar on a terminal's stderr, and
plain periodic lines when stderr is piped to a file or a CI log.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from ._errors import NeardupInputError
from .search import ProgressFn

__all__ = ["ProgressBars", "as_progress"]


class ProgressBars:
    """A ``progress(stage, done, total)`` callback that draws one ``tqdm`` bar per stage.

    A bar opens when its stage first reports and closes when it reaches its total or when
    another stage starts (or on :meth:`close`).

    Parameters
    ----------
    disable:
        Draw nothing (e.g. for ``--quiet``).
    file:
        Where the bars go (default ``sys.stderr``; in a notebook, the widget).
    """

    def __init__(self, *, disable: bool = False, file: IO[str] | None = None) -> None:
        self.disable = bool(disable)
        self.file = file
        self.stage: str | None = None
        self._bar: Any = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.disable:
            return
        if stage != self.stage or self._bar is None:
            self.close()
            self.stage, self._bar = stage, self._open(stage, total)
        bar = self._bar
        if bar.total != total:
            bar.total = total
        bar.update(max(0, done - bar.n))
        if done >= total:
            self.close()

    def _open(self, stage: str, total: int) -> Any:
        from tqdm.auto import tqdm

        out = self.file if self.file is not None else sys.stderr
        piped = not getattr(out, "isatty", lambda: False)()
        return tqdm(
            total=total,
            desc=f"neardup: {stage}",
            file=out,
            leave=True,
            dynamic_ncols=not piped,
            mininterval=2.0 if piped else 0.1,  # a log gets a line every 2 s, not a flood
        )

    def close(self) -> None:
        """Close the open bar, if any (it stays on screen with its elapsed time)."""
        if self._bar is not None:
            self._bar.close()
        self.stage, self._bar = None, None


def as_progress(progress: bool | ProgressFn | None) -> ProgressFn | None:
    """``True`` -> :class:`ProgressBars`, ``None``/``False`` -> no progress, a callable as is."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return ProgressBars()
    if not callable(progress):
        raise NeardupInputError(
            f"progress must be True, False, None or a callable(stage, done, total), "
            f"got {progress!r}."
        )
    return progress
