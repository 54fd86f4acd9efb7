"""Structural check of an annoy (euclidean) index file before annoy maps it.

annoy trusts its file: a node that points outside the file makes the process segfault, and
a node that points to itself makes a query loop forever. A saved index is a file a user may
receive from elsewhere, so :func:`check_annoy_file` reads the nodes with numpy first and
refuses any file annoy could not walk safely.

Layout (annoy 1.17, ``Euclidean`` with int32 indices and float32 values): a node is
``n_descendants (int32), a (float32), children[2] (int32), v[f] (float32)``, ``16 + 4 f``
bytes. Nodes ``0 .. n_items - 1`` are the items (``n_descendants == 1``). A tree node with
``n_descendants <= f + 2`` lists that many item numbers from ``children`` on; a larger one
splits into ``children[0]`` and ``children[1]``, which annoy always writes before their
parent. The roots (and a copy of them) end the file, each with ``n_descendants == n_items``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._errors import NeardupInputError

__all__ = ["check_annoy_file"]

_BLOCK_NODES = 65536


def check_annoy_file(path: str | Path, *, dim: int, n_items: int, where: str) -> None:
    """Raise :class:`NeardupInputError` unless ``path`` is an index annoy can walk safely.

    Parameters
    ----------
    path:
        The ``index.ann`` file.
    dim:
        Vector width ``f`` the index was built with.
    n_items:
        Items the index must hold.
    where:
        The index's name in messages.
    """
    path = Path(path)
    words = 4 + dim  # int32/float32 words per node
    size = path.stat().st_size
    if size == 0 or size % (4 * words):
        raise _damaged(where, f"its size ({size:,} bytes) is not a whole number of nodes")
    nodes = np.memmap(path, dtype="<i4", mode="r", shape=(size // (4 * words), words))
    n_nodes = len(nodes)
    if n_nodes <= n_items:
        raise _damaged(where, f"it holds {n_nodes} nodes for {n_items} items (no trees)")
    if int(nodes[-1, 0]) != n_items:
        raise _damaged(where, f"its roots cover {int(nodes[-1, 0])} items, not {n_items}")
    leaf_max = dim + 2
    for start in range(0, n_nodes, _BLOCK_NODES):
        block = np.asarray(nodes[start : start + _BLOCK_NODES])
        number = np.arange(start, start + len(block))
        count = block[:, 0]
        item = number < n_items
        if np.any(count[item] != 1):
            raise _damaged(where, "an item node is not marked as an item")
        tree = ~item
        if np.any((count[tree] < 1) | (count[tree] > n_items)):
            raise _damaged(where, "a tree node has an impossible number of descendants")
        split = tree & (count > leaf_max)
        children = block[split][:, 2:4]
        if np.any((children < 0) | (children >= number[split][:, None])):
            raise _damaged(where, "a tree node points outside the file or to a later node")
        leaf = tree & (count <= leaf_max)
        listed = block[leaf][:, 2 : 2 + leaf_max]
        used = np.arange(leaf_max)[None, :] < count[leaf][:, None]
        if np.any(used & ((listed < 0) | (listed >= n_items))):
            raise _damaged(where, "a leaf lists an item number outside the index")
    del nodes


def _damaged(where: str, detail: str) -> NeardupInputError:
    return NeardupInputError(
        f"the reference index at {where!r} is damaged: index.ann is not a valid annoy index "
        f"({detail}). Save it again."
    )
