"""Crash-safe files: a destination holds its old content or its new one, never a part.

:func:`atomic_write` writes to a temporary file in the destination's directory (so the final
rename stays on one file system), flushes and fsyncs it, renames it over the destination and
fsyncs the directory. A crash, a kill or a full disk before the rename leaves the old file as
it was; the temporary file is removed on any error. A ``kill -9`` can leave one, named
``.NAME.PID.*.tmp`` (never a partial destination); the next write of ``NAME`` removes it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ._errors import NeardupInputError

__all__ = [
    "atomic_write",
    "check_writable",
    "fsync_directory",
    "remove_stale_temporaries",
    "write_text_atomically",
]


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "w", *, encoding: str | None = "utf-8"
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically.

    Parameters
    ----------
    path:
        The destination. Its directory must exist.
    mode:
        ``"w"`` (text, ``encoding``) or ``"wb"``.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    binary = "b" in mode
    remove_stale_temporaries(target)
    import tempfile  # here: tempfile (with random, shutil, bz2, lzma) costs ~2 ms at import

    fd, temp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _keep_permissions(target, temp)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_directory(directory)


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def remove_stale_temporaries(target: str | os.PathLike[str]) -> None:
    """Delete temporary files of ``target`` left by writers that died (``kill -9``).

    Temporary names carry the writer's process id; files of a process that no longer
    exists are removed, those of live writers are left alone.
    """
    target = Path(target)
    directory = target.parent if str(target.parent) else Path(".")
    head = f".{target.name}."
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(head) and name.endswith(".tmp")):
            continue
        pid = name[len(head) :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(directory / name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _keep_permissions(target: Path, temp: str) -> None:
    """Give the new file the old one's mode, or the default a plain ``open`` would give."""
    try:
        mode = os.stat(target).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    with contextlib.suppress(OSError):
        os.chmod(temp, mode)


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def check_writable(path: str | os.PathLike[str], what: str) -> None:
    """Raise a clear :class:`NeardupInputError` now if ``path`` cannot be written later.

    Checks that the directory exists and accepts a new file, and that ``path`` is not a
    directory: run before a long analysis, so it does not fail at the very end.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise NeardupInputError(f"{what} {str(target)!r} is a directory; give a file name.")
    if not directory.is_dir():
        raise NeardupInputError(
            f"{what} {str(target)!r}: the directory {str(directory)!r} does not exist; "
            "create it first or choose another path."
        )
    try:
        import tempfile

        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as err:
        raise NeardupInputError(
            f"{what} {str(target)!r} cannot be written ({err.strerror or err}); choose a "
            "writable directory."
        ) from err
    os.close(fd)
    os.unlink(temp)
