"""The progress callback every search step accepts."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ProgressFn"]

#: ``progress(stage, done, total)``: called as a long step advances.
ProgressFn = Callable[[str, int, int], None]
