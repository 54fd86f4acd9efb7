"""Executors: how the cell engine runs its per-cell tasks.

An executor is any object with ``map(fn, tasks) -> iterator of results in task order`` (the
protocol of ``concurrent.futures.Executor.map``). The engine merges results in a way that does
not depend on the order or the number of workers, so every executor gives the same pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from .._errors import NeardupInputError

__all__ = ["Executor", "SerialExecutor", "ThreadExecutor", "check_executor"]

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs ``fn`` over ``tasks`` and yields the results in task order."""

    def map(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]: ...


class SerialExecutor:
    """In this process, one task after the other (tasks are built lazily: one cell in memory)."""

    def map(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        return map(fn, tasks)

    def __repr__(self) -> str:
        return "SerialExecutor()"


class ThreadExecutor:
    """A pool of ``n_threads`` threads (numpy's products release the GIL).

    At most ``2 * n_threads`` tasks are in flight, so only that many cells are gathered at once.
    """

    def __init__(self, n_threads: int = 2) -> None:
        if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
            raise NeardupInputError(f"n_threads must be an int >= 1, got {n_threads!r}.")
        self.n_threads = n_threads

    def map(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        # imported here: concurrent.futures (with logging) costs ~5 ms at import
        from concurrent.futures import ThreadPoolExecutor

        window = 2 * self.n_threads
        with ThreadPoolExecutor(self.n_threads) as pool:
            pending: list[Any] = []
            for task in tasks:
                pending.append(pool.submit(fn, task))
                if len(pending) >= window:
                    yield pending.pop(0).result()
            for future in pending:
                yield future.result()

    def __repr__(self) -> str:
        return f"ThreadExecutor({self.n_threads})"


def check_executor(executor: Any) -> Any:
    """``None`` -> :class:`SerialExecutor`; otherwise anything with a callable ``map``."""
    if executor is None:
        return SerialExecutor()
    if not callable(getattr(executor, "map", None)):
        raise NeardupInputError(
            f"executor={executor!r} has no map(fn, tasks) method; pass None (in this process), "
            "neardup.search.ThreadExecutor(n) or an object whose map(fn, tasks) yields the "
            "results in task order (e.g. concurrent.futures.ThreadPoolExecutor)."
        )
    return executor
