"""Routes beyond a view's cut (:mod:`neardup._lopsided`, :mod:`neardup._white`): their pairs.

:func:`with_lopsided` takes an analysed view (a :class:`ViewRun`) and returns it with the
pairs of two routes added: each query row's ``k`` nearest reference rows (the evaluation
rows against the reference split, or every row against every other) are found by
:func:`neardup.search.probed_neighbors` in the view's normalised rows, the intrinsic
dimension of the natural rows is measured on their distances (:func:`natural_dimension`, as
``Auto`` does), and a row's pair with its nearest row is kept, whatever its distance in
threshold units, when the row is *lopsided* (its whole neighbourhood says "copy") or, given
the full-resolution images, when the pair's residual is *white* (the copy differs from its
source by pixel noise alone). The run's :meth:`LopsidedRun.relative` reads the pair's score
(at most 1) where it is smaller.

``find_duplicates`` applies it to the colour and YCbCr 8x8 thumbnail views of colour
images (the lopsided route to the YCbCr view only), with the default ``Auto`` threshold only
(an explicit strategy is the user's cut).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ._auto_threshold import natural_dimension
from ._chains import PairwiseFn
from ._lopsided import (
    LOPSIDED_FALSE_ALARMS,
    LOPSIDED_LEAST_ROWS,
    LOPSIDED_REACH,
    lopsided_level,
    lopsided_rows,
    lopsided_scores,
)
from ._threshold import ResolvedThreshold
from ._view_run import ViewRun
from ._white import WHITE_REACH, residual_whiteness, white_level
from .search import ClosePairs, merge_pairs, probed_neighbors

__all__ = ["LopsidedRun", "with_lopsided"]

#: query rows whose neighbour distances are measured at once
_QUERY_BLOCK = 4096


@dataclass
class LopsidedRun(ViewRun):
    """A :class:`ViewRun` with the pairs of the routes beyond its cut (lopsided or white):
    sorted keys ``min * N + max`` and their scores (at most 1: within the threshold,
    whatever their distance)."""

    lopsided_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lopsided_score: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def relative(self, i: np.ndarray, j: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """``(p,)`` ``distance / threshold``, or the pair's lopsided score where smaller."""
        return self._overlay(i, j, super().relative(i, j, distance))

    def pairwise(self) -> PairwiseFn:
        """Member-to-member distances in threshold units, lopsided pairs at their score
        where smaller (see :meth:`relative`)."""
        plain = super().pairwise()

        def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            out = np.asarray(plain(a, b), dtype=np.float64)
            ii, jj = np.meshgrid(np.asarray(a), np.asarray(b), indexing="ij")
            return self._overlay(ii.ravel(), jj.ravel(), out.ravel().copy()).reshape(out.shape)

        return pairwise

    def _overlay(self, i: np.ndarray, j: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out`` (threshold units, float64) with each kept pair's score where smaller."""
        if not len(self.lopsided_keys) or not len(out):
            return out
        i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
        key = np.minimum(i, j) * self.rows.n + np.maximum(i, j)
        at = np.minimum(np.searchsorted(self.lopsided_keys, key), len(self.lopsided_keys) - 1)
        hit = self.lopsided_keys[at] == key
        out[hit] = np.minimum(out[hit], self.lopsided_score[at[hit]])
        return out


def with_lopsided(
    run: ViewRun,
    split_of_row: np.ndarray,
    reference_index: int | None,
    k: int = 10,
    images: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    lopsided: bool = True,
) -> ViewRun:
    """``run`` with its lopsided and white pairs (a :class:`LopsidedRun`), or ``run`` itself
    where there are none, the rows are not unit length (``normalize`` other than ``"row"``)
    or there are too few rows to measure the neighbourhoods (``k`` reference rows at least).

    ``images``: global rows -> their ``(n, R, R, C)`` full-resolution thumbnails, for the
    white-residual test (:mod:`neardup._white`); ``None``: the lopsided test alone.
    ``lopsided=False``: the white-residual test alone.
    """
    if run.settings.get("normalize") != "row" or not (run.threshold.value > 0):
        return run
    n = run.rows.n
    everyone = np.arange(n)
    if reference_index is None:
        query = target = everyone
    else:
        query = np.flatnonzero(split_of_row != reference_index)
        target = np.flatnonzero(split_of_row == reference_index)
    same = query is target
    if len(target) < k + int(same) or not len(query) or k < 3:
        return run
    indices, distances = _nearest(run, query, target, k, same)
    finite = np.all(np.isfinite(distances), axis=1)
    if finite.sum() < 8:
        return run
    dimension, _ = natural_dimension(distances[finite])
    cut = run.threshold.value
    level = lopsided_level(len(query), least_rows=LOPSIDED_LEAST_ROWS)
    beyond = finite & (distances[:, 0] > cut)  # within the cut: a close pair already
    kept = np.zeros(len(query), dtype=bool)
    if lopsided:
        kept = beyond & lopsided_rows(distances, dimension, cut, level)
    score = np.full(len(query), np.inf)
    score[kept] = lopsided_scores(distances[kept], dimension, level)
    white = np.zeros(len(query), dtype=bool)
    if images is not None:
        near = np.flatnonzero(beyond & (distances[:, 0] <= WHITE_REACH * cut))
        sources, copies = images(indices[near, 0]), images(query[near])
        whiteness = residual_whiteness(sources, copies)
        white_cut = white_level(int(np.prod(copies.shape[1:])))
        white[near] = whiteness <= white_cut
        score[near] = np.minimum(score[near], whiteness / white_cut)  # rows once each
    hit = kept | white
    if not hit.any():
        return run
    rows, other = query[hit], indices[hit, 0]
    low, high = np.minimum(rows, other), np.maximum(rows, other)
    score = score[hit]
    key = low * n + high
    order = np.argsort(key, kind="stable")
    pairs = merge_pairs([run.pairs, ClosePairs(low, high, distances[hit, 0].astype(np.float32))])
    note = (
        f"; {int(white.sum())} white pairs beyond the cut kept (the residual of the nearest "
        f"row within {WHITE_REACH:g} x the cut autocorrelates at most {white_cut:.3g})"
        if images is not None
        else ""
    ) + (
        f"; {int(kept.sum())} lopsided pairs beyond the cut kept (nearest within "
        f"{LOPSIDED_REACH:g} x the cut, a natural row that lopsided among its {k} nearest "
        f"at most {level:.3g} likely, where {LOPSIDED_FALSE_ALARMS:g} natural rows are "
        f"expected; intrinsic dimension {dimension:.1f})"
        if lopsided
        else ""
    )
    resolved = run.threshold
    return LopsidedRun(
        rows=run.rows,
        graph=run.graph,
        threshold=ResolvedThreshold(
            resolved.strategy, resolved.params, resolved.value, resolved.reason + note
        ),
        settings=run.settings,
        pairs=pairs,
        nearest=run.nearest,
        lopsided_keys=key[order],
        lopsided_score=score[order],
    )


def _nearest(
    run: ViewRun, query: np.ndarray, target: np.ndarray, k: int, same: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``k`` nearest ``target`` rows (global rows, itself left out) and their
    distances, ``(Q, k)`` each, sorted by distance (``-1`` / ``inf``: none)."""
    targets = run.rows.take(target)
    queries = targets if same else run.rows.take(query)
    found = probed_neighbors(queries, targets, k + int(same))
    indices = np.full((len(query), k), -1, dtype=np.int64)
    distances = np.full((len(query), k), np.inf, dtype=np.float64)
    for start in range(0, len(query), _QUERY_BLOCK):
        rows = query[start : start + _QUERY_BLOCK]
        local = found[start : start + len(rows)]
        valid = local >= 0
        glob = np.where(valid, target[np.maximum(local, 0)], -1)
        valid &= glob != rows[:, None]
        x = queries[start : start + len(rows)].astype(np.float64)
        y = targets[np.maximum(local, 0)].astype(np.float64)
        d = np.sqrt(np.maximum(((x[:, None, :] - y) ** 2).sum(axis=2), 0.0))
        d = np.where(valid, d, np.inf)
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        indices[start : start + len(rows)] = np.where(
            np.isfinite(np.take_along_axis(d, order, 1)), np.take_along_axis(glob, order, 1), -1
        )
        distances[start : start + len(rows)] = np.take_along_axis(d, order, 1)
    return indices, distances
