"""The markup route of a text view: copies whose markup lost its punctuation.

:func:`~neardup.views.normalize_text` removes markup (``<a href="...">``, ``&amp;``) before
the n-grams are cut, so a mail's HTML source and its rendered text are the same text. A copy
of that source with its punctuation removed has no markup left to remove: its tags became
words (``a href http ...``), which no normalisation can tell from text, and it lies far from
its source in the view (1.1-2.7 cuts for the sentences of SpamAssassin's HTML mails in
``bench_quality.py --only text-scale``). The two agree in the words their raw texts leave
once every non-word character is removed (:func:`~neardup.views.markup_words`). So a text
with markup is also compared, as its markup words, with the texts without markup (those a
copy that lost its punctuation would be): such a pair is listed from the texts' n-grams
(by the view's own n-gram join at scale, :func:`~neardup._text_join.text_join`, which hashes
the markup words in the same pass; on small data every such pair is measured, up to
:data:`BRUTE_FORCE_PAIRS`; otherwise by a MinHash pass over the marked texts' markup words
and the others' texts), measured in the view between the marked text's
markup-words row and the other's row, and word-checked on the same words, with the view's
threshold and word reach. Pairs of two marked texts are not compared this way: two mails of
one HTML template share their tags' words while their text differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._text_join import MIN_JACCARD, TextSource, min_jaccard_for, text_join
from ._view_run import ViewRun
from .search import exact_pair_distances
from .views import WORD_REACH, TextRows, TextView, word_edits

__all__ = ["BRUTE_FORCE_PAIRS", "MarkupRoute", "markup_route"]

#: up to this many (marked, unmarked) row pairs, the route measures every one (blocked matrix
#: products: well under a second at SpamAssassin's 6,046 mails, where a MinHash pass over
#: whole mails took seconds); beyond, without the view's own n-gram join, a MinHash pass.
BRUTE_FORCE_PAIRS = 10**8
_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class MarkupRoute:
    """The markup words of a text view's marked rows and the pairs listed through them.

    ``slot`` ``(N,)``: each global row's position among the marked rows (-1: no markup);
    ``rows`` ``(M, d)``: the marked rows' markup words in the view (unit rows); ``words``:
    their markup words; ``i``, ``j``: the listed pairs (global rows, ``i < j``), one marked
    and one not, within the view's word reach.
    """

    slot: np.ndarray
    rows: np.ndarray
    words: tuple[str, ...]
    i: np.ndarray
    j: np.ndarray

    def relative(
        self, run: ViewRun, i: np.ndarray, j: np.ndarray, texts: Sequence[str]
    ) -> np.ndarray:
        """``(p,)`` float64 distances in threshold units of the pairs ``(i, j)`` through
        their markup words: the pairs of one marked and one unmarked row whose words pass
        :func:`~neardup.views.word_edits` (``related`` within the threshold; ``confirmed``
        within :data:`~neardup.views.WORD_REACH` thresholds, divided by it);
        ``inf`` for every other pair."""
        out = np.full(len(i), np.inf)
        value = run.threshold.value
        mixed = np.flatnonzero((self.slot[i] >= 0) != (self.slot[j] >= 0))
        if not len(mixed) or value <= 0:
            return out
        marked = np.where(self.slot[i[mixed]] >= 0, i[mixed], j[mixed])
        plain = np.where(self.slot[i[mixed]] >= 0, j[mixed], i[mixed])
        gap = exact_pair_distances(self.rows[self.slot[marked]], run.take(plain))
        relative = gap.astype(np.float64) / value
        for n in np.flatnonzero(relative <= WORD_REACH):
            edits = word_edits(self.words[self.slot[marked[n]]], texts[plain[n]])
            if edits.confirmed:
                out[mixed[n]] = relative[n] / WORD_REACH
            elif edits.related and relative[n] <= 1.0:
                out[mixed[n]] = relative[n]
        return out


class _RouteRows:
    """Global rows read through the markup route: a marked row's markup-words row, any
    other row as the view holds it (the ``n`` and ``take`` that the n-gram join reads)."""

    def __init__(self, run: ViewRun, slot: np.ndarray, rows: np.ndarray) -> None:
        self.n, self._run, self._slot, self._rows = len(slot), run, slot, rows

    def take(self, rows: np.ndarray) -> np.ndarray:
        out = np.array(self._run.take(rows), dtype=np.float32)
        marked = self._slot[rows] >= 0
        out[marked] = self._rows[self._slot[rows[marked]]]
        return out


def markup_route(
    run: ViewRun, parts: Sequence[Any], texts: Sequence[str], *, seed: int = 0
) -> MarkupRoute | None:
    """The markup route of one text view (see the module docstring), or ``None`` where it
    does not apply: no row has markup, the rows' markup words, gram length or width are
    unknown (``parts``, one array per split, must be :class:`~neardup.views.TextRows` of a
    :class:`~neardup.views.TextView`), the view's rows are not unit rows in full width, or its
    threshold is too loose (or zero) for the n-gram join. ``texts``: the normalised texts of
    all rows."""
    if not all(isinstance(p, TextRows) and p.markup is not None for p in parts):
        return None
    ngrams = {p.ngram for p in parts}
    words = [w for p in parts for w in p.markup]
    marked = np.flatnonzero([bool(w) for w in words])
    value = run.threshold.value * WORD_REACH
    if (
        not len(marked)
        or len(ngrams) != 1
        or None in ngrams
        or run.settings.get("normalize") != "row"
        or run.settings.get("reduce") is not None
        or run.rows.d != parts[0].shape[1]
        or value <= 0
        or min_jaccard_for(value) < MIN_JACCARD
    ):
        return None
    ngram = int(ngrams.pop())
    chosen = tuple(words[r] for r in marked)
    rows = TextView(ngram=ngram, dim=int(run.rows.d)).rows(chosen)
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), np.float32(1e-12))
    slot = np.full(len(words), -1, dtype=np.int64)
    slot[marked] = np.arange(len(marked))
    route_rows = _RouteRows(run, slot, rows)
    plain = np.flatnonzero(slot < 0)
    if run.markup_candidates is not None:  # listed by the view's own n-gram join
        i, j = (np.asarray(side, dtype=np.int64) for side in run.markup_candidates)
        keep = exact_pair_distances(route_rows.take(i), route_rows.take(j)) <= value
        i, j = i[keep], j[keep]
    elif len(marked) * len(plain) <= BRUTE_FORCE_PAIRS:  # small data: every pair measured
        i, j = _close_across(rows, run.take(plain), value)
        i, j = marked[i], plain[j]
    else:  # joined by the cell engine at scale: a MinHash pass of the route's own
        source = TextSource(tuple(w or t for w, t in zip(words, texts)), ngram)
        pairs = text_join(route_rows, source, value, seed=seed, across=slot >= 0).pairs
        i, j = pairs.i, pairs.j
    return MarkupRoute(slot=slot, rows=rows, words=chosen, i=np.minimum(i, j), j=np.maximum(i, j))


def _close_across(a: np.ndarray, b: np.ndarray, value: float) -> tuple[np.ndarray, np.ndarray]:
    """The pairs ``(p, q)`` of unit rows ``a[p]``, ``b[q]`` within ``value`` (exact distances,
    blocked matrix products)."""
    found_a, found_b = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    b = np.ascontiguousarray(b, dtype=np.float32)
    for start in range(0, len(a), _BLOCK_ROWS):
        block = a[start : start + _BLOCK_ROWS]
        near = 2.0 - 2.0 * (block @ b.T) <= value * value * 1.001  # a margin for rounding
        p, q = np.nonzero(near)
        keep = exact_pair_distances(block[p], b[q]) <= value
        found_a.append(p[keep] + start)
        found_b.append(q[keep])
    return np.concatenate(found_a), np.concatenate(found_b)
