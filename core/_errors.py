"""Errors raised for bad input, with messages that name the problem and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["LeakageError", "NeardupInputError", "check_split_mapping", "closest_names"]


class NeardupInputError(ValueError):
    """Raised when the data or the options given to neardup cannot be used as they are.

    The message always says what was wrong and what to do instead.
    """


def closest_names(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return a human-readable hint listing the candidates closest to ``name``."""
    candidates = [str(c) for c in candidates]
    close = difflib.get_close_matches(str(name), candidates, n=n, cutoff=0.0)
    if not candidates:
        return "there are none"
    shown = ", ".join(repr(c) for c in close)
    more = len(candidates) - len(close)
    return f"closest: {shown}" + (f" (and {more} more)" if more > 0 else "")


def check_split_mapping(option: Any, name: str, splits: Iterable[str], example: str) -> None:
    """Raise unless ``option`` is a mapping whose keys are all among ``splits``.

    ``example`` shows a correct call in the message, e.g. ``"samples={'data': images}"``.
    """
    if not isinstance(option, Mapping):
        raise NeardupInputError(
            f"{name} must be a mapping split -> sequence, got {type(option).__name__}; "
            f"e.g. {example}."
        )
    splits = list(splits)
    unknown = [s for s in option if s not in splits]
    if unknown:
        raise NeardupInputError(
            f"{name} names split {unknown[0]!r}, which is not in the data "
            f"({closest_names(unknown[0], splits)})."
        )


class LeakageError(RuntimeError):
    """Raised by an integration's ``fail_above=`` when leakage exceeds the allowed fraction."""
