"""The aligned view of :class:`neardup.views.ImageRows`: candidates, aligned distances, threshold.

For each query row (the evaluation rows when there is a reference split, otherwise every row)
the nearest rows it may duplicate (reference rows, or every other row) are found in three cheap
shift-tolerant views (:func:`neardup.views.candidate_features`, ``candidates`` per view) and
in four crop searches (:func:`neardup.views.crop_candidate_features`: Fourier magnitudes
and a wide centred thumbnail against those of zoomed-in centres, both ways,
``crop_candidates`` each, twice that in the Fourier search for the sources of a query that
is a crop) and, for colour images, in 8x8 colour thumbnails
(:func:`neardup.views.color_candidate_features`, ``candidates`` rows), all by
:func:`neardup.search.probed_neighbors`: exact for small inputs, otherwise each query searches
the nearest cells of a k-means partition, so the work grows like ``Q * sqrt(T)``, not
``Q * T``. Each candidate pair is re-scored by
:func:`neardup.views.indexed_aligned_distances` on grey thumbnails (colour images: each
image's projection on its principal colour axis; with one split, each unordered pair once).
Thumbnails blown up from images smaller than 16 px (an 8x8 digit in a 16x16 thumbnail) are
compared at their source resolution instead, over whole-pixel shifts of up to 2 source pixels
on the pair's overlap (:func:`neardup.views.overlap_distances`) and against each other's
zoomed boxes (:func:`neardup.views.crop_distances`: crops), and each query's candidates are
its nearest rows in the overlap distance plus its nearest in the crop correlation (the
threshold reads the overlap distance of the former alone). Each query's candidates from
the candidate views, sorted by aligned distance, form a neighbour graph in the aligned
metric, so the view's threshold strategy (``Auto`` by default) reads it like any kNN graph:
silent on data without duplicates, with its reason. Pairs within the threshold among each
query's nearest candidates (crop searches included) are the view's close pairs, and so are
*lone* pairs beyond it (with the default ``Auto``; :mod:`neardup._lone`): a query whose
nearest candidate is far closer than its second, by a ratio natural rows reach less than
``Auto.false_alarms`` times in all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ._auto_threshold import Auto, natural_dimension, total_rows
from ._chains import PairwiseFn
from ._lone import lone_ratio, lone_scores
from ._threshold import ResolvedThreshold, as_strategy, resolve_threshold
from ._view_run import ViewRun, graph_close_pairs
from .search import ClosePairs, NeighborGraph, Rows, merge_pairs, probed_neighbors
from .views import (
    CROP_OFFSETS,
    SEARCH_OFFSETS,
    ImageRows,
    as_image_rows,
    candidate_features,
    color_candidate_features,
    crop_distances,
    indexed_aligned_distances,
    overlap_distances,
    search_features,
    shift_crops,
    shift_offsets,
    shift_reach,
    source_factor,
    source_images,
    zoomed_pairs,
)

__all__ = [
    "ALIGNED_SUFFIX",
    "CROP_CANDIDATES",
    "DEFAULT_CANDIDATES",
    "AlignedRun",
    "aligned_run",
]

#: the aligned view of image view ``v`` is named ``v + ALIGNED_SUFFIX``
ALIGNED_SUFFIX = ":aligned"
#: nearest rows per candidate view and query row (three candidate views); also the neighbours
#: per row that the threshold reads
DEFAULT_CANDIDATES = 10
#: nearest rows per query in each crop search (in each view of crop_candidate_features, a
#: query's plain row against the targets' zoomed rows, and its zoomed row against their
#: plain rows)
CROP_CANDIDATES = 5
#: the Fourier search for the sources of a query that is a crop lists this many times
#: ``crop_candidates`` rows: it ranks a crop's source lower than the thumbnail search does
#: (bench_quality.py, grey Fashion-MNIST, the three 90 % crops of seeds 0 / 1 in no
#: candidate list with 5 rows: source at Fourier rank 6, 8 and 9). In one split every row is
#: a query, so each pair gets the longer search one way round; 10 rows both ways re-scored
#: 24 % more candidate pairs, one way 12 %.
_FOURIER_CROP_FACTOR = 2
_GREY_CHUNK = 4096  # colour images projected to grey per chunk (bounded buffers)
#: colour images: two images whose principal colour axes meet at an angle whose |cosine| is
#: below this are painted in other colours (the axes of copies agree: colourised
#: Fashion-MNIST, 10,000 + 2,000, planted shifts, crops and noisy copies at |cos| >= 0.999,
#: colour jitter >= 0.994, JPEG >= 0.903; benchmarks/README.md, "Round 12").
COLOR_AXIS_AGREEMENT = 0.8
#: ... and such a re-coloured pair is a copy in the colour-blind views (the aligned view
#: here, the luma view in :func:`neardup.find_duplicates`) only within this share of the
#: view's cut: its colour views do not back it, and a re-coloured copy (greyscale, channels
#: swapped) changes no shape, while look-alikes in other colours that those views match
#: lie anywhere within the cut. Measured (benchmarks/README.md, "Round 13"): re-coloured
#: copies at medians 0.003 (BGR swap, aligned) and 0.10 (greyscale, luma) of the cut, the
#: colourised controls' look-alikes at 0.82-0.98.
RECOLORED_REACH = 0.7
#: an image whose principal colour axis lies this close (|cosine|) to the grey diagonal has
#: contrast without colour (a greyscale copy, black on white): no pair of it is re-coloured
#: (greyscale copies of colourised Fashion-MNIST at >= 0.9996, unless flat; 0.1 % of the
#: colourised pictures themselves)
ACHROMATIC_AXIS = 0.999
#: colour images: two images whose colour casts (the per-channel means of their standardised
#: thumbnails, a quarter of the cast over the picture's spread) both reach this norm and
#: point apart (cosine below 0) are painted in other colours even where their principal
#: colour axes agree. Measured on four plantings of colourised Fashion-MNIST 20,000 + 5,000
#: (benchmarks/README.md, "Round 15"): of the planted copies with casts of 0.2 or more, the
#: lowest cosine was 0.71 (colour jitter); the dresses that Lightning's subset control
#: flagged (the aligned view at 0.93 of its cut, axes at |cos| 0.97) have casts of 1.14 and
#: 0.37 at cosine -0.66.
OPPOSED_CAST = 0.2
_UNRELATED = float(np.sqrt(2.0))  # the aligned distance of unrelated images
_PLAIN_SEARCHES = 3  # the candidate views' searches come first in _searches
#: small images: up to this many query-target pairs, shift candidates by brute force
_EXACT_SHIFT_PAIRS = 20_000_000
_SEARCH_BYTES = 64 << 20  # one block of brute-force products


class AlignedRun(ViewRun):
    """A :class:`ViewRun` whose distance is the aligned distance of the thumbnails."""

    images: np.ndarray  # (N, R, R, 1) float32: the grey thumbnails
    scorer: _Scorer
    #: the lone pairs (:mod:`neardup._lone`): sorted keys ``min * N + max`` and their lone
    #: scores (within 1: kept, whatever their distance in threshold units)
    lone_keys: np.ndarray
    lone_score: np.ndarray

    def pair_distances(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """``(p,)`` aligned distances of rows ``i[p]`` and ``j[p]``."""
        return self.scorer(i, j)

    def color_axes_agree(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """``(p,)`` bool: whether rows ``i[p]`` and ``j[p]`` (colour images) have principal
        colour axes that agree and colour casts that do not point apart (all true for grey
        images; :meth:`_Scorer.axes_agree`); the pairs that do not are
        re-coloured pairs, copies only within :data:`RECOLORED_REACH` of the cut here and,
        in :func:`neardup.find_duplicates`, in the luma view of the same images."""
        return self.scorer.axes_agree(np.asarray(i), np.asarray(j))

    def relative(self, i: np.ndarray, j: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """``(p,)`` ``distance / threshold``, or the pair's lone score where smaller (a lone
        pair counts as within the threshold)."""
        return self._lone_overlay(i, j, super().relative(i, j, distance))

    def _lone_overlay(self, i: np.ndarray, j: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out`` (threshold units, float64) with each lone pair's score where smaller."""
        if not len(self.lone_keys) or not len(out):
            return out
        i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
        key = np.minimum(i, j) * len(self.images) + np.maximum(i, j)
        at = np.minimum(np.searchsorted(self.lone_keys, key), len(self.lone_keys) - 1)
        hit = self.lone_keys[at] == key
        out[hit] = np.minimum(out[hit], self.lone_score[at[hit]])
        return out

    def pairwise(self) -> PairwiseFn:
        """Aligned member-to-member distances in threshold units (lone pairs: their score
        where smaller, see :meth:`relative`)."""
        scale = self.threshold.value if self.threshold.value > 0 else 1.0

        def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            ii, jj = np.meshgrid(np.asarray(a), np.asarray(b), indexing="ij")
            i, j = ii.ravel(), jj.ravel()
            d = self.pair_distances(i, j).astype(np.float64) / scale
            return self._lone_overlay(i, j, d).reshape(ii.shape)

        return pairwise


class _Scorer:
    """The aligned distance of row pairs of ``images`` ``(N, R, R, 1)``: a crop of either image
    is matched (:func:`neardup.views.indexed_aligned_distances`), except for thumbnails blown
    up from small images (``source``: ``(N, S, S, 1)`` at the source resolution, ``S < 16``),
    whose distance is the smaller of the overlap distance over whole-pixel shifts of up to
    ``reach`` source pixels (:func:`neardup.views.overlap_distances`), which reaches a 2 px
    shift of an 8x8 image, and the crop distance (:func:`neardup.views.crop_distances`: each
    image against the other's zoomed boxes at the source resolution). Crops of small images
    were found by neither the overlap nor the thumbnail's aligned distance (taking the
    smaller of those two brought natural pairs closer: 3 / 1 false alarms on the disjoint
    controls of ``bench_quality.py --only small`` instead of 1 / 0); with the crop distance,
    90 % crops of 12x12 / 10x10 Fashion-MNIST went 0 -> 24 and 0 -> 30 of 30 found, every
    other figure unchanged.
    ``signed=False`` (colour images, projected on their principal colour axis, whose sign is
    arbitrary): the best absolute correlation (the overlap distance stays signed).
    ``axes``: those ``(N, C)`` principal colour axes; calls are gated by them (:meth:`gate`)
    unless ``gated=False`` (the threshold's statistics read the ungated distances)."""

    def __init__(
        self,
        images: np.ndarray,
        signed: bool = True,
        axes: np.ndarray | None = None,
        casts: np.ndarray | None = None,
    ) -> None:
        self.images = images
        self.signed = signed
        self.axes = axes
        #: ``(N, C)`` unit colour casts and ``(N,)`` whether each reaches :data:`OPPOSED_CAST`
        #: (``None`` without casts): what :meth:`axes_agree` compares
        self.cast_directions = self.strong_cast = None
        if casts is not None:
            norms = np.linalg.norm(casts, axis=1)
            self.cast_directions = casts / np.maximum(norms, 1e-12)[:, None]
            self.strong_cast = norms >= OPPOSED_CAST
        #: ``(N,)`` bool: colour images whose contrast has no colour (:data:`ACHROMATIC_AXIS`)
        self.achromatic = (
            None
            if axes is None
            else np.abs(axes.sum(axis=1)) / np.sqrt(axes.shape[1]) >= ACHROMATIC_AXIS
        )
        factor = source_factor(images)
        self.source = source_images(images, factor) if factor > 1 else None
        self.reach = shift_reach(self.source.shape[1]) if self.source is not None else 0

    def __call__(self, i: np.ndarray, j: np.ndarray, gated: bool = True) -> np.ndarray:
        """``(p,)`` distances of rows ``i[p]`` and ``j[p]`` (each image's own share of the
        work done once); ``gated``: through :meth:`gate`."""
        if self.reach:
            out = np.minimum(
                overlap_distances(self.source, i, j, reach=self.reach),
                crop_distances(self.source, i, j),
            )
        else:
            out = indexed_aligned_distances(self.images, i, j, signed=self.signed)
        return self.gate(i, j, out) if gated else out

    def axes_agree(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """``(p,)`` bool: whether rows ``i[p]`` and ``j[p]`` have principal colour axes that
        agree (|cosine| at least :data:`COLOR_AXIS_AGREEMENT`), or one of them has no colour
        to disagree with (:data:`ACHROMATIC_AXIS`), and colour casts that do not point apart
        (:data:`OPPOSED_CAST`); all true for grey images."""
        if self.axes is None or not len(i):
            return np.ones(len(i), dtype=bool)
        cosine = np.abs(np.einsum("pc,pc->p", self.axes[i], self.axes[j]))
        agree = (cosine >= COLOR_AXIS_AGREEMENT) | self.achromatic[i] | self.achromatic[j]
        if self.cast_directions is None:
            return agree
        apart = np.einsum("pc,pc->p", self.cast_directions[i], self.cast_directions[j]) < 0
        return agree & ~(apart & self.strong_cast[i] & self.strong_cast[j])

    def gate(self, i: np.ndarray, j: np.ndarray, distances: np.ndarray) -> np.ndarray:
        """``distances`` of the pairs ``(i[p], j[p])``, those of re-coloured pairs of colour
        images (:meth:`axes_agree` false) divided by :data:`RECOLORED_REACH` (no
        farther than unrelated images, unless they already were)."""
        if self.axes is None or not len(distances):
            return distances
        agree = self.axes_agree(i, j)
        recolored = np.minimum(distances / RECOLORED_REACH, np.maximum(distances, _UNRELATED))
        return np.where(agree, distances, recolored).astype(distances.dtype)

    def unordered(self, i: np.ndarray, j: np.ndarray, gated: bool = True) -> np.ndarray:
        """As calling it, scoring each unordered pair once, as ``(min, max)``: in a split
        searched against itself most candidate pairs are listed both ways round."""
        low, high = np.minimum(i, j), np.maximum(i, j)
        key = low.astype(np.int64) * len(self.images) + high
        _, first, back = np.unique(key, return_index=True, return_inverse=True)
        return self(low[first], high[first], gated)[back.ravel()]


def _statistics_distances(
    scorer: _Scorer, query: np.ndarray, found: np.ndarray, plain: np.ndarray, distances: np.ndarray
) -> np.ndarray:
    """``(Q, c)`` distances the threshold reads for the candidate views' rows: the aligned
    distances, except for small images, whose threshold reads the overlap distance alone
    (the crop distance finds crops below that cut; read by the threshold too, it brought
    the cut below noisy and re-encoded copies: Fashion-MNIST at 10x10, ``bench_quality.py
    --only small``, noise 13 -> 4 and JPEG 20 -> 9 of 30 found by the aligned view)."""
    if not scorer.reach:
        return distances
    out = np.full(found.shape, np.inf, dtype=np.float32)
    q_rows = np.repeat(query, found.shape[1])[plain.ravel()]
    out[plain] = overlap_distances(scorer.source, q_rows, found[plain], reach=scorer.reach)
    return out


def _shift_candidates(
    source: np.ndarray, query: np.ndarray, target: np.ndarray, per_view: int, reach: int
) -> np.ndarray:
    """``(len(query), per_view)`` global rows: each query's nearest ``target`` rows in the
    overlap correlation over whole-pixel shifts within ``reach`` (``source`` ``(N, S, S, 1)``,
    small images at their own resolution), from the overlapping crops of every shift
    (:func:`neardup.views.shift_crops`, ``S * S`` or fewer dimensions); see
    :func:`_nearest_over`. ``-1``: none."""
    pairs = (shift_crops(source, dy, dx) for dy, dx in shift_offsets(reach))
    return _nearest_over(pairs, query, target, per_view)


def _crop_candidates(
    source: np.ndarray, query: np.ndarray, target: np.ndarray, per_view: int
) -> np.ndarray:
    """``(len(query), per_view)`` global rows: each query's nearest ``target`` rows by crop
    correlation (:mod:`neardup.views` ``zoomed_pairs``: the query against the targets' zoomed
    boxes, it is a crop of them, and its zoomed boxes against the targets, they are crops of
    it), small images at their source resolution; see :func:`_nearest_over`."""

    exact = len(query) * len(target) <= _EXACT_SHIFT_PAIRS

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for plain, zoomed in zoomed_pairs(source, CROP_OFFSETS if exact else SEARCH_OFFSETS):
            yield plain, zoomed
            yield zoomed, plain

    return _nearest_over(pairs(), query, target, per_view)


def _nearest_over(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    query: np.ndarray,
    target: np.ndarray,
    per_view: int,
) -> np.ndarray:
    """Each query's ``per_view`` nearest ``target`` rows by their best product over the
    ``(first, second)`` row ``pairs`` (``(N, n)`` unit rows each: ``first[q] @ second[t]`` is
    a correlation). Up to :data:`_EXACT_SHIFT_PAIRS` query-target pairs: exactly (the best
    product of every pair, then each query's top rows); beyond: each pair of rows' nearest by
    :func:`neardup.search.probed_neighbors`, merged by best correlation. ``-1``: none."""
    if len(query) * len(target) <= _EXACT_SHIFT_PAIRS:
        return _exact_nearest_over(pairs, query, target, per_view)
    want = per_view + 1 if np.array_equal(query, target) else per_view
    rows, scores = [], []
    for first, second in pairs:
        nearest = probed_neighbors(first[query], second[target], want)
        safe = np.maximum(nearest, 0)
        corr = np.einsum("qn,qkn->qk", first[query], second[target[safe]])
        rows.append(np.where(nearest >= 0, target[safe], -1))
        scores.append(np.where(nearest >= 0, corr, -np.inf))
    found, score = np.concatenate(rows, axis=1), np.concatenate(scores, axis=1)
    score[(found == query[:, None]) | (found < 0)] = -np.inf
    order = np.lexsort((-score, found), axis=-1)  # by row, its best shift first
    found, score = np.take_along_axis(found, order, 1), np.take_along_axis(score, order, 1)
    score[:, 1:][found[:, 1:] == found[:, :-1]] = -np.inf  # the row's other shifts
    best = np.argsort(-score, axis=1, kind="stable")[:, :per_view]
    return np.where(
        np.isfinite(np.take_along_axis(score, best, 1)), np.take_along_axis(found, best, 1), -1
    )


def _exact_nearest_over(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    query: np.ndarray,
    target: np.ndarray,
    per_view: int,
) -> np.ndarray:
    """:func:`_nearest_over` by brute force: the best product over the pairs of rows with
    every target (one product per pair of rows and block of queries; each pair of rows is
    made once), then each query's top."""
    k = min(per_view, len(target))
    out = np.full((len(query), per_view), -1, dtype=np.int64)
    best = np.full((len(query), len(target)), -np.inf, dtype=np.float32)
    step = max(1, _SEARCH_BYTES // (4 * len(target)))
    for first, second in pairs:
        targets = second[target]
        for start in range(0, len(query), step):
            block = best[start : start + step]
            np.maximum(block, first[query[start : start + step]] @ targets.T, out=block)
    best[query[:, None] == target[None, :]] = -np.inf  # no self
    for start in range(0, len(query), step):
        block = best[start : start + step]
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        keep = np.isfinite(np.take_along_axis(block, top, 1))
        out[start : start + len(block), :k] = np.where(keep, target[top], -1)
    return out


def _candidates(
    images: np.ndarray, query: np.ndarray, target: np.ndarray, per_view: int, per_crop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's candidate rows: the union of its ``per_view`` nearest ``target`` rows in
    each candidate view and its ``per_crop`` nearest in each crop search (:func:`_searches`).

    Returns ``found`` and ``plain`` as :func:`_union` does: the threshold is read from the
    candidate views' listings alone, as before the crop searches, so those add candidates
    without moving the cut.
    """
    lists, plain_lists = [], []
    same = np.array_equal(query, target)
    for number, (queries, targets, k) in enumerate(_searches(images, per_view, per_crop)):
        want = k + 1 if same else k
        nearest = probed_neighbors(queries[query], targets[target], want)
        lists.append(np.where(nearest >= 0, target[nearest], -1))
        plain_lists.append(np.full(nearest.shape, number < _PLAIN_SEARCHES))
    return _union(query, lists, plain_lists)


def _with_color_candidates(
    found: np.ndarray,
    plain: np.ndarray,
    colour: np.ndarray,
    query: np.ndarray,
    target: np.ndarray,
    per_view: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``found`` and ``plain`` (as :func:`_union` returns them) with each query's ``per_view``
    nearest ``target`` rows in :func:`neardup.views.color_candidate_features` added.

    The candidate views see the grey projection alone, and among many images a shifted or
    cropped copy of an item that fills the frame ranks far down in them (its content window
    is clipped by the border), while its colours still put it next to its source. Measured
    on colourised Fashion-MNIST, 60,000 + 10,000: the sources of 4 missed copies ranked
    12th-25,791st in the grey candidate searches and 0th-1st in colour. Like the crop
    searches' rows, the added rows do not feed the threshold's statistics (not ``plain``):
    feeding them raised the cut there (0.0932 -> 0.1004) and the no-copy control's
    unconfirmed flags (5 -> 8).
    """
    features = color_candidate_features(colour)
    same = np.array_equal(query, target)
    nearest = probed_neighbors(
        features[query], features[target], per_view + 1 if same else per_view
    )
    listed = np.where(nearest >= 0, target[nearest], -1)
    return _union(query, [found, listed], [plain, np.zeros(listed.shape, dtype=bool)])


def _union(
    query: np.ndarray, lists: list[np.ndarray], plain_lists: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the ``(len(query), c_l)`` global candidate ``lists`` side by side, without
    each query itself and without repeats.

    Returns ``found`` ``(len(query), c)`` global rows (``-1``: none) and ``plain``
    ``(len(query), c)`` bool, whether a candidate view (``plain_lists``, one bool array per
    list; ``None``: every list) and not only a crop search listed the row.
    """
    if plain_lists is None:
        plain_lists = [np.ones(rows.shape, dtype=bool) for rows in lists]
    found = np.concatenate(lists, axis=1)
    plain = np.concatenate(plain_lists, axis=1)
    found = np.where(found == query[:, None], -1, found)
    # -1 (none) first, then repeats side by side, a candidate view's listing first of them
    order = np.lexsort((~plain, found), axis=-1)
    found, plain = np.take_along_axis(found, order, 1), np.take_along_axis(plain, order, 1)
    repeat = np.zeros_like(found, dtype=bool)
    repeat[:, 1:] = found[:, 1:] == found[:, :-1]
    found[repeat] = -1
    return found, plain & (found >= 0)


def _searches(
    images: np.ndarray, per_view: int, per_crop: int
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """``(query features, target features, k)`` of each candidate search: the three
    candidate views (:func:`neardup.views.candidate_features`), then, in each view of
    :func:`neardup.views.crop_candidate_features` (Fourier magnitudes, the wider centred
    thumbnail), each image's plain row against the zoomed rows of the others (it is a crop
    of them) and its zoomed row against their plain rows (they are crops of it); both made
    together by :func:`neardup.views.search_features`.
    """
    if not per_crop:
        return [(f, f, per_view) for f in candidate_features(images)]
    plain_views, crop_views = search_features(images)
    out = [(f, f, per_view) for f in plain_views]  # the first _PLAIN_SEARCHES
    for number, (plain, zoomed) in enumerate(crop_views):
        as_crop = per_crop * (_FOURIER_CROP_FACTOR if number == 0 else 1)
        out += [(plain, zoomed, as_crop), (zoomed, plain, per_crop)]
    return out


def aligned_run(
    parts: list[ImageRows],
    split_of_row: np.ndarray,
    reference_index: int | None,
    *,
    threshold: Any = None,
    candidates: int = DEFAULT_CANDIDATES,
    crop_candidates: int = CROP_CANDIDATES,
) -> AlignedRun:
    """Analyse the aligned view of the splits' ``parts`` (``(N_split, R*R*C)`` each, in order).

    ``threshold``: a strategy or ``None`` (:class:`neardup.Auto`), resolved on each query's
    candidates sorted by aligned distance.
    """
    strategy = Auto() if threshold is None else as_strategy(threshold)
    rows = as_image_rows(np.concatenate(parts), parts[0].side, parts[0].channels)
    # geometry is matched on one grey image (colour changes are the 8x8 colour view's job):
    # a third of the work and memory of matching three channels
    images, axes, casts = _grey(rows.images())
    n = len(images)
    everyone = np.arange(n)
    if reference_index is None:
        query, target = everyone, everyone
    else:
        query = np.flatnonzero(split_of_row != reference_index)
        target = np.flatnonzero(split_of_row == reference_index)
    if not len(query) or not len(target):
        query = target = everyone
    # a colour image's principal colour axis has no sign of its own: a copy's may come out
    # flipped (noise, re-encoding), so colour images match on the absolute correlation
    scorer = _Scorer(images, signed=rows.channels == 1, axes=axes, casts=casts)
    if scorer.reach:  # small images: their nearest rows in the overlap distance itself
        shifted = _shift_candidates(scorer.source, query, target, candidates, scorer.reach)
        lists, plain_lists = [shifted], [np.ones(shifted.shape, dtype=bool)]
        if crop_candidates:  # and in the crop distance (not read by the threshold)
            cropped = _crop_candidates(scorer.source, query, target, crop_candidates)
            lists.append(cropped)
            plain_lists.append(np.zeros(cropped.shape, dtype=bool))
        found, plain = _union(query, lists, plain_lists)
    else:
        found, plain = _candidates(images, query, target, candidates, crop_candidates)
        if rows.channels > 1:  # colour images: also their nearest rows in colour
            found, plain = _with_color_candidates(
                found, plain, rows.images(), query, target, candidates
            )
    valid = found >= 0
    q_rows = np.repeat(query, found.shape[1])[valid.ravel()]
    raw = np.full(found.shape, np.inf, dtype=np.float32)
    score = scorer.unordered if query is target else scorer
    raw[valid] = score(q_rows, found[valid], gated=False)
    distances = raw.copy()
    distances[valid] = scorer.gate(q_rows, found[valid], raw[valid])
    graph = _nearest_graph(found, distances, query, candidates)
    # the threshold reads the candidate views' lists alone (the crop searches' extra rows
    # are nearer in the aligned metric by design and would move the natural statistics),
    # before the colour gate (the natural neighbours of the grey geometry set the cut)
    stats = _nearest_graph(
        np.where(plain, found, -1), _statistics_distances(scorer, query, found, plain, raw),
        query, candidates,
    )  # fmt: skip
    resolved = resolve_threshold(strategy, stats, "row")
    pairs = graph_close_pairs(_global_graph(graph, n), resolved.value)
    # thumbnails blown up from small images: no lone pairs (measured on Fashion-MNIST at 12x12
    # and 10x10, bench_quality.py --only small: +1 false alarm on each no-copy control)
    lone = _lone_pairs(None if scorer.reach else strategy, stats, graph, resolved.value)
    if len(lone[0]):
        pairs = merge_pairs([pairs, ClosePairs(lone[0], lone[1], lone[2])])
        resolved = _with_lone_reason(resolved, lone[4])
    settings: dict[str, Any] = {
        "normalize": "standardised thumbnail",
        "reduce": None,
        "k": int(graph.k),
        "backend": "aligned",
        "candidates": candidates,
        "crop_candidates": 0 if scorer.reach else crop_candidates,
        "side": int(rows.side),
        "dim": int(images[0].size),
        "shift_reach": (
            f"{scorer.reach} source px of {scorer.source.shape[1]}x{scorer.source.shape[1]}"
            if scorer.reach
            else None
        ),
    }
    run = AlignedRun(
        rows=Rows.from_matrix(images.reshape(n, -1)),
        graph=graph,
        threshold=resolved,
        settings=settings,
        pairs=pairs,
    )
    run.images = images
    run.scorer = scorer
    key = lone[0] * n + lone[1]
    order = np.argsort(key, kind="stable")
    run.lone_keys, run.lone_score = key[order], lone[3][order]
    return run


def _lone_pairs(
    strategy: Any, stats: NeighborGraph, graph: NeighborGraph, cut: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """The lone pairs of the aligned graph (:mod:`neardup._lone`) beyond the cut ``cut``.

    With the default ``Auto`` threshold only (an explicit strategy is the user's cut): the
    intrinsic dimension and the natural rows are measured on ``stats`` as ``Auto`` measures
    them, the ratio test reads each query's two nearest candidates in ``graph`` (crop searches
    included) and the nearest must lie within the ``Auto.quantile`` of the natural nearest
    distances. Returns ``(i, j, distance, score, reason)``: pairs ``i < j`` (global rows),
    their aligned distance and lone score (at most 1), and a note for the threshold's reason.
    """
    none = np.zeros(0, dtype=np.int64)
    empty = (none, none, np.zeros(0, np.float32), np.zeros(0), "")
    if not isinstance(strategy, Auto) or graph.k < 2 or not len(graph.indices):
        return empty
    distances = stats.distances[np.all(np.isfinite(stats.distances), axis=1)]
    if len(distances) < 8:
        return empty
    dimension, natural = natural_dimension(distances)
    nearest = distances[:, 0].astype(np.float64)
    anchored = nearest[natural & (nearest > 0)]
    ratio = lone_ratio(dimension, total_rows(graph), strategy.false_alarms)
    if anchored.size < 8 or not np.isfinite(ratio):
        return empty
    reach = float(np.quantile(anchored, strategy.quantile))
    score = lone_scores(graph.distances, ratio)
    first = graph.distances[:, 0]
    hit = (score <= 1.0) & (first <= reach) & (first > cut) & (graph.indices[:, 0] >= 0)
    query, other = graph.query_rows[hit], graph.indices[hit, 0]
    reason = (
        f"; {int(hit.sum())} lone pairs beyond the cut kept (nearest candidate within "
        f"{reach:.4g} and below {ratio:.3f} x the second nearest, where "
        f"{strategy.false_alarms:g} natural rows are expected)"
    )
    return (
        np.minimum(query, other),
        np.maximum(query, other),
        first[hit].astype(np.float32),
        score[hit],
        reason,
    )


def _with_lone_reason(resolved: ResolvedThreshold, note: str) -> ResolvedThreshold:
    return ResolvedThreshold(
        resolved.strategy, resolved.params, resolved.value, resolved.reason + note
    )


def _global_graph(graph: NeighborGraph, n: int) -> NeighborGraph:
    """The graph as ``(N, k)`` over every row (rows that were no query list no neighbour)."""
    indices = np.full((n, graph.k), -1, dtype=np.int64)
    distances = np.full((n, graph.k), np.inf, dtype=np.float32)
    indices[graph.query_rows] = graph.indices
    distances[graph.query_rows] = graph.distances
    return NeighborGraph(indices=indices, distances=distances, backend=graph.backend)


def _nearest_graph(
    found: np.ndarray, distances: np.ndarray, query: np.ndarray, k: int
) -> NeighborGraph:
    """Each query's ``k`` candidates (``found`` ``(Q, c)``, ``-1``: none) nearest by their
    aligned ``distances`` ``(Q, c)``, ties by row; every query has at least ``k`` (each
    candidate view lists that many rows)."""
    valid = found >= 0
    distances = np.where(valid, distances, np.inf).astype(np.float32)
    order = np.lexsort((np.where(valid, found, np.iinfo(np.int64).max), distances), axis=-1)
    order = order[:, :k]
    return NeighborGraph(
        indices=np.take_along_axis(np.where(valid, found, -1), order, axis=1),
        distances=np.take_along_axis(distances, order, axis=1),
        backend="aligned",
        rows=query,
        total_rows=len(query),
    )


def _grey(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(N, R, R, 1)`` float32 grey images of ``(N, R, R, C)`` thumbnails: each colour image's
    pixels projected on its own principal colour axis (oriented by :func:`_orientation`),
    those ``(N, C)`` unit axes and the ``(N, C)`` per-channel means of the thumbnails, their
    colour casts (both ``None`` for grey images).

    The channel mean loses pictures whose contrast lies in colour (a red object on a green
    ground of equal brightness is flat in it); the principal axis keeps the most contrast of
    any grey projection, and for most photographs it is close to the brightness axis. Measured
    on colourised Fashion-MNIST (``benchmarks/bench_quality.py --only noise,images``), 90 %
    crops found: 0.86 / 0.84 with the channel mean, 0.98 / 0.94 with the principal axis
    (seeds 0 / 1), and fewer false alarms on the no-copy control (2 / 1 -> 1 / 0).
    """
    if images.shape[-1] == 1:
        return np.ascontiguousarray(images, dtype=np.float32), None, None
    out = np.empty((*images.shape[:-1], 1), dtype=np.float32)
    axes = np.empty((len(images), images.shape[-1]), dtype=np.float32)
    casts = np.empty((len(images), images.shape[-1]), dtype=np.float32)
    for start in range(0, len(images), _GREY_CHUNK):
        chunk = images[start : start + _GREY_CHUNK]
        x = chunk.reshape(len(chunk), -1, chunk.shape[-1]).astype(np.float32)
        means = x.mean(axis=1, keepdims=True)
        casts[start : start + len(chunk)] = means[:, 0]
        x -= means
        scatter = np.matmul(x.transpose(0, 2, 1), x).astype(np.float64)  # (n, C, C)
        _, vectors = np.linalg.eigh(scatter)
        axis = vectors[:, :, -1].astype(np.float32)  # (n, C): eigenvalues ascend
        axes[start : start + len(chunk)] = axis
        grey = np.matmul(x, axis[:, :, None])  # (n, P, 1)
        grey *= _orientation(grey.reshape(chunk.shape[:3]))[:, None, None]
        out[start : start + len(chunk)] = grey.reshape(out[start : start + len(chunk)].shape)
    return out, axes, casts


def _orientation(grey: np.ndarray) -> np.ndarray:
    """``(n,)`` signs that orient the mean-free projections ``grey`` ``(n, R, R)`` of colour
    images on their principal colour axes the same way for an image and its copies: the object
    against its ground, i.e. the central region (the middle half of each side) minus the
    border ring around it is positive.

    The sign of a principal axis is arbitrary, and brightness does not fix it for a faint
    picture (a fore- and background of nearly equal brightness: the axis' brightness share
    flips sign with noise or JPEG between a copy and its source), while the object and its
    ground keep their places under noise, re-encoding, shifts and crops. Measured in
    benchmarks/README.md, "Faint colour pictures" (``benchmarks/bench_quality.py --only colour``).
    """
    side_y, side_x = grey.shape[1], grey.shape[2]
    qy, qx = side_y // 4, side_x // 4
    centre = grey[:, qy : side_y - qy, qx : side_x - qx]
    inside = centre.sum(axis=(1, 2))
    ring = (grey.sum(axis=(1, 2)) - inside) / max(side_y * side_x - centre[0].size, 1)
    key = inside / max(centre[0].size, 1) - ring
    return np.where(key < 0, -1.0, 1.0).astype(np.float32)
