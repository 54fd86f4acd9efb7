"""Close pairs of text rows at scale: candidates from the texts' n-grams, measured exactly.

A :class:`~neardup.views.TextView` row is a signed hash of its text's character n-grams into
1,024 buckets. Such rows are spread evenly in every direction, so the cell engine's partition
keeps few close pairs inside one cell and its spill grows with the data: on 48,000 + 12,000
real sentences (``benchmarks/bench_quality.py --only text-scale``) it took 201 s. Two texts
within the view's threshold share most of their n-grams, so their n-gram *sets* have a high
Jaccard similarity, and banded MinHash (:mod:`neardup.search._minhash`) lists such pairs in
time linear in the rows (13.5 s there). Every candidate is then measured in the view itself,
so the pairs and distances are the view's own; only a pair that MinHash never lists can be
missed.

From the threshold to the Jaccard similarity: a pair within distance ``t`` of unit rows has a
view cosine of at least ``c = 1 - t^2 / 2``. The two n-gram sets' cosine is lower by the
square-root counts and bucket collisions: by at most 0.085 for 99 % of the 2,092 pairs within
0.6 of 25,000 real sentences (at most 0.164). For sets of about equal size the Jaccard
similarity is at least ``s / (2 - s)`` for a set cosine ``s``; :func:`min_jaccard_for` takes
``s = c - VIEW_COSINE_SLACK``. Every one of the 1,490 pairs within the cut ``Auto`` chose
there (0.5) met that bound; of the 2,092 within 0.6, 4 lay up to 0.11 below it (a short
sentence contained in a longer one), where a pair is still listed with probability 0.7-0.99.
The bands make a pair at the bound a candidate with probability 0.99; measured against brute
force (``benchmarks/bench_text_join.py``), every close pair was found at 25,000 and 50,000
rows on three seeds.

Texts with markup also carry their markup words (:func:`~neardup.views.markup_words`,
:mod:`neardup._markup_route`): the same pass hashes them as extra rows, and lists the pairs
of a text's markup words and a text without markup (:attr:`TextJoin.markup`) for that route,
without a second pass over every text's n-grams.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .search import (
    BAND_ROWS,
    Backend,
    Cells,
    ClosePairs,
    Rows,
    banded_candidates,
    bands_for,
    exact_pair_distances,
    minhash_signatures,
)
from .views import TextRows, gram_sets

__all__ = [
    "TEXT_JOIN_ROWS",
    "TextJoin",
    "TextSource",
    "min_jaccard_for",
    "text_join",
    "text_source",
    "uses_text_join",
]

#: rows from which text rows are joined through their n-grams (below, the cell engine is
#: still quick and exact for most pairs, and earlier results stay as they were).
TEXT_JOIN_ROWS = 20_000

#: how much higher a view cosine may be than its n-gram sets' cosine (0.085 for 99 % of the
#: close pairs measured, see the module docstring).
VIEW_COSINE_SLACK = 0.12

#: below this Jaccard similarity (a threshold above ~0.9 in the view), MinHash would need
#: too many bands to be cheaper than the cell engine.
MIN_JACCARD = 0.3

_MEASURE_PAIRS = 1 << 15  # candidate pairs measured at a time


@dataclass(frozen=True)
class TextSource:
    """The normalised texts of every row (all splits, in row order), the view's gram length
    and, when known, every row's markup words (``""`` for a text without markup)."""

    texts: tuple[str, ...]
    ngram: int
    markup: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TextJoin:
    """What :func:`text_join` found: ``pairs`` within the threshold, ``info`` (what the join
    did) and ``markup``: the candidate pairs ``(marked, plain)`` (global
    rows, unmeasured) of a text's markup words and a text without markup."""

    pairs: ClosePairs
    info: dict[str, Any]
    markup: tuple[np.ndarray, np.ndarray]


def text_source(parts: Sequence[Any]) -> TextSource | None:
    """The texts of ``parts`` (one array per split, in order) when every part is
    :class:`~neardup.views.TextRows` with texts and one known gram length, else ``None``."""
    if not parts or not all(isinstance(p, TextRows) and p.texts is not None for p in parts):
        return None
    ngrams = {p.ngram for p in parts}
    if len(ngrams) != 1 or None in ngrams:
        return None
    markup = None
    if all(p.markup is not None for p in parts):
        markup = tuple(w for p in parts for w in p.markup)
    return TextSource(tuple(t for p in parts for t in p.texts), int(ngrams.pop()), markup)


def min_jaccard_for(threshold: float) -> float:
    """The smallest n-gram Jaccard similarity of a pair of text rows within ``threshold``
    (see the module docstring); 0 when the threshold admits unrelated texts."""
    cosine = 1.0 - float(threshold) ** 2 / 2.0 - VIEW_COSINE_SLACK
    return cosine / (2.0 - cosine) if cosine > 0 else 0.0


def uses_text_join(
    engine: Backend, *, normalize: str | None, reduced: bool, n_rows: int, threshold: float
) -> bool:
    """Whether :func:`text_join` replaces the engine's join for text rows: the default
    cell engine (no margin or device chosen), unit rows in full width, at least
    :data:`TEXT_JOIN_ROWS` rows, and a threshold tight enough for MinHash."""
    return (
        isinstance(engine, Cells)
        and engine.margin is None
        and engine.device is None
        and normalize == "row"
        and not reduced
        and n_rows >= TEXT_JOIN_ROWS
        and min_jaccard_for(threshold) >= MIN_JACCARD
    )


def text_join(
    rows: Rows,
    source: TextSource,
    threshold: float,
    *,
    items: np.ndarray | None = None,
    seed: int = 0,
    across: np.ndarray | None = None,
) -> TextJoin:
    """The pairs of ``rows`` within ``threshold`` among the MinHash candidates of their texts,
    and the candidates of the markup route: when ``source`` has markup words, they are hashed
    as extra rows in the same pass, and each candidate pair of a marked row's markup words and
    a row without markup is listed (:attr:`TextJoin.markup`).

    Parameters
    ----------
    rows:
        The view's ``N`` normalised rows.
    source:
        Their texts (``N``) and gram length.
    threshold:
        The view's distance.
    items:
        Ascending rows to join (the distinct rows when exact copies were grouped); ``None``:
        every row.
    seed:
        Seeds the MinHash functions.
    across:
        ``(N,)`` bool: only the candidates between a ``True`` and a ``False`` row are
        measured and kept; ``None``: every candidate.

    Returns
    -------
    TextJoin
        ``pairs`` (global rows, ``i < j``, sorted, exact distances), ``info``, what the join
        did (``settings["text_join"]``: bands, rows per band, the Jaccard similarity aimed
        at, candidates measured), and the markup route's candidates.
    """
    ids = np.arange(rows.n, dtype=np.int64) if items is None else np.asarray(items, np.int64)
    min_jaccard = min_jaccard_for(threshold)
    bands = bands_for(min_jaccard)
    markup = source.markup
    # every marked row, also one whose row an exact copy stands for among the items: rows
    # alike in the view may differ in their markup
    marked = np.flatnonzero([bool(w) for w in markup]) if markup is not None else ids[:0]
    texts = [source.texts[i] for i in ids] + [markup[i] for i in marked]
    owner, grams = gram_sets(texts, source.ngram)
    signatures = minhash_signatures(owner, grams, len(texts), bands * BAND_ROWS, seed=seed)
    a, b = banded_candidates(signatures, bands)
    extra = b >= len(ids)  # a < b: b is a marked row's markup words, or both are
    to_row = np.flatnonzero(extra & (a < len(ids)))
    to_row = to_row[~np.isin(ids[a[to_row]], marked)]  # ... and a a row without markup
    route = (ids[a[to_row]], marked[b[to_row] - len(ids)])
    a, b = a[~extra], b[~extra]
    i, j = ids[a], ids[b]  # ids ascend: still i < j, sorted by (i, j)
    if across is not None:
        mixed = across[i] != across[j]
        i, j = i[mixed], j[mixed]
    distance = np.empty(len(i), dtype=np.float32)
    for start in range(0, len(i), _MEASURE_PAIRS):
        pair = slice(start, start + _MEASURE_PAIRS)
        distance[pair] = exact_pair_distances(rows.take(i[pair]), rows.take(j[pair]))
    keep = distance <= threshold
    info = {
        "bands": bands,
        "band_rows": BAND_ROWS,
        "min_jaccard": round(min_jaccard, 4),
        "candidates": len(i),
    }
    if len(marked):
        info["markup_candidates"] = len(route[0])
    return TextJoin(ClosePairs(i[keep], j[keep], distance[keep]), info, (route[1], route[0]))
