"""Several views of the same samples, one verdict.

Each view (a model layer, an input thumbnail, text n-grams, ...) is analysed on its own, with
its own threshold (:func:`analyse_view`). A pair of samples is a near-duplicate when the
combination rule says so:

- ``"any"``: the pair is within its own threshold in at least one view;
- ``"confirm:<view>"``: as ``"any"``, and the named view must also put the pair within
  :data:`CONFIRM_WITHIN` of its thresholds. Meant for an input view beside a model's views
  (the integrations' ``"input"``). For text (a :class:`~neardup.views.TextView` with its
  texts): within the text view's own threshold, its word check and word reach included: an
  embedding's natural neighbours (paraphrases, templated sentences) are close in the
  embedding but not in their characters, while real near-duplicates are close in both, or in
  the characters alone. For images (:class:`~neardup.views.AlignedImageView` rows) the
  named view stands for all its pixel views (thumbnail, aligned, luma, YCbCr): a pair must
  lie within :data:`IMAGE_CONFIRM_WITHIN` of their thresholds in at least one of them. A
  trained model's pooled features put look-alikes of a class close, pictures its pixels
  place many thresholds apart; a copy, however edited, stays near its source in some pixel
  view.

A view of :class:`~neardup.views.TextRows` (a :class:`~neardup.views.TextView` of the texts)
also checks the words of every pair it puts within its threshold: a pair whose words were
replaced rather than dropped, added or misspelt (:func:`~neardup.views.word_edits`;
templated sentences, reordered clauses) counts as not close in that view
(``result.views[view]``, the view's own result, keeps it). ``settings["word_check"]`` says,
per such view, how many pairs the check turned away. A pair whose words confirm it
(:attr:`~neardup.views.WordEdits.confirmed`: none replaced, only a few dropped, added or
misspelt) counts within :data:`~neardup.views.WORD_REACH` of the view's thresholds: its
distance in threshold units is divided by that reach. The check reads each text's
:func:`~neardup.views.grouped_words` (``TextRows.grouped``) where known, so that a dropped or
changed URL, path or call counts as one word. A text with markup is also compared,
as the words its markup leaves without punctuation, with the texts without markup
(:mod:`neardup._markup_route`: a copy whose punctuation was removed keeps its tags' words).

For colour images (:class:`~neardup.views.AlignedImageView` rows), a pair whose principal
colour axes disagree, or whose colour casts point apart
(:data:`~neardup._aligned_run.OPPOSED_CAST`), is a *re-coloured pair*: in the views blind to
colour (the aligned view
and the luma view) it counts only within
:data:`~neardup._aligned_run.RECOLORED_REACH` of the view's threshold, where re-coloured
copies (greyscale, channels swapped) lie and look-alikes painted in other colours do not.
``settings["color_gate"]`` says how many luma-view pairs that turned away.

The YCbCr view keeps a quarter of each picture's colour cast, uncapped (JPEG damages the
chroma of faint pictures, and the cast helps find their copies), so two faint pictures of one
hue collapse together in it, however different their shapes. A pair within its threshold that
the colour thumbnail (whose cast is capped at the picture's structure) puts beyond
:data:`YCBCR_THUMBNAIL_REACH` of its own threshold counts as not close in the YCbCr view
(nor within a ``"confirm:<view>"`` rule's reach; ``settings["color_gate"]`` counts the
pairs within its threshold that this turned away, under the YCbCr view's name).

``settings["confirm_within"]`` records the reach a ``"confirm:<view>"`` rule used and
``settings["unconfirmed"]`` how many pairs within some view's threshold it turned away.

The combined result puts every view on one scale, *threshold units* (a pair's distance in a
view divided by that view's threshold), and scores a pair by its smallest relative distance
over the views. Duplicate sets are the connected components of the union of all views' close
pairs; leakage keeps, for each evaluation sample, its best-scoring reference partner, with
the views that found the pair and its distance in every view.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ._aligned_run import ALIGNED_SUFFIX, RECOLORED_REACH, aligned_run
from ._auto_threshold import Auto
from ._chains import PairwiseFn, set_diameters, split_chains
from ._clusters import ClusterAssignment
from ._errors import NeardupInputError, closest_names
from ._leakage import first_per_source
from ._lopsided_run import with_lopsided
from ._markup_route import MarkupRoute, markup_route
from ._stats import distinct
from ._text_join import text_source
from ._threshold import ResolvedThreshold, as_strategy
from ._validate import Dataset, prepare, split_index
from ._view_run import (
    ViewRun,
    analyse_view,
    assignment_from_members,
    check_max_diameter,
    class_counts,
    duplicate_sets,
    histogram,
    leakage_by_split,
    single_view_result,
)
from .report import DuplicatesResult, Leakage
from .search import Backend, ProgressFn
from .views import WORD_REACH, ImageRows, ImageView, TextRows, word_edits

__all__ = [
    "COMBINE_RULES",
    "CONFIRM_WITHIN",
    "IMAGE_CONFIRM_WITHIN",
    "YCBCR_THUMBNAIL_REACH",
    "check_combine",
    "confirming_view",
    "find_duplicates_multiview",
]

COMBINE_RULES = ("any", "confirm:<view>")
#: ``"confirm:<view>"``: a pair must lie within this many of the view's thresholds in it
#: (measured on pydoc sentences with MiniLM + TextView through the ``datasets`` hook: the
#: embedding's templated neighbours it wrongly flags lie at 1.16-1.24 text thresholds, the
#: planted edits it alone finds at most at 1.03; 1.1 keeps every planted edit that ``"any"``
#: finds and drops most paraphrases, see benchmarks/README.md, "Quality through the
#: integrations' defaults"). A text view with its texts confirms within its own threshold
#: instead: since round 14 its word reach takes every pair whose words confirm it up to
#: 1.3 thresholds, which covers those planted edits, and the band 1-1.1 held only pairs with a
#: word replaced (on 48,000 + 12,000 sentences, ``bench_quality.py --only text-scale
#: --text-scale-minilm``, seeds 0 / 1: control false alarms 1 / 2 -> 0 / 1, every recall
#: unchanged).
CONFIRM_WITHIN = 1.1
#: ``"confirm:<view>"`` with :class:`~neardup.views.AlignedImageView` rows as the named view:
#: a pair must lie within this many thresholds of at least one of its pixel views. Measured
#: through the three integrations' defaults on grey and colourised Fashion-MNIST, 10,000 +
#: 2,000 and 60,000 + 10,000 (benchmarks/README.md, "Round 14"): every planted copy and every
#: natural same picture that a model layer alone found lay within 2.25 (planted at most
#: 1.38); the layers' look-alikes at 1.3-9.8, most of Keras' ``pool`` ones beyond 4.
IMAGE_CONFIRM_WITHIN = 2.5
#: a pair the YCbCr view of colour images puts within its threshold counts there only when
#: the colour thumbnail puts it within this many of its own thresholds. Measured on
#: colourised Fashion-MNIST (benchmarks/README.md, "Round 15"): the planted copies that the
#: YCbCr view alone found lay at most 4.69 thumbnail thresholds away (a noisy copy; JPEG
#: copies at most 3.25), the full-scale control's false alarms at 7.26 (two nearly blank
#: red pictures of different jackets, 0.75 of the YCbCr cut) and 9.46 (a pair Keras'
#: ``pool`` layer found and the YCbCr view confirmed at 2.0 thresholds).
YCBCR_THUMBNAIL_REACH = 6.0
_CONFIRM = "confirm:"
#: the views :func:`_image_rows` adds beside a view of colour images
_LUMA_SUFFIX, _YCBCR_SUFFIX = "-luma", "-ycbcr"


def check_combine(combine: Any, views: list[str] | None = None) -> str:
    """Validate the ``combine=`` rule (and, given the views, the view it names)."""
    ok = isinstance(combine, str) and (
        combine == "any" or (combine.startswith(_CONFIRM) and len(combine) > len(_CONFIRM))
    )
    if not ok:
        raise NeardupInputError(
            f"combine must be one of {', '.join(map(repr, COMBINE_RULES))}, got {combine!r}."
        )
    view = confirming_view(combine)
    if view is not None and views is not None and view not in views:
        raise NeardupInputError(
            f"combine={combine!r} names view {view!r}, which is not in the data "
            f"({closest_names(view, views)})."
        )
    return combine


def confirming_view(combine: str) -> str | None:
    """The view a ``"confirm:<view>"`` rule names; ``None`` for ``"any"``."""
    return combine[len(_CONFIRM) :] if combine.startswith(_CONFIRM) else None


def _per_view(option: Any, name: str, views: list[str], default: Any) -> dict[str, Any]:
    """One value for every view, or a mapping ``view -> value`` (missing views: default)."""
    if not isinstance(option, Mapping):
        return {v: option for v in views}
    unknown = [v for v in option if v not in views]
    if unknown:
        raise NeardupInputError(
            f"{name} names view {unknown[0]!r}, which is not in the data "
            f"({closest_names(unknown[0], views)})."
        )
    return {v: option.get(v, default) for v in views}


def _view_names(data: Mapping[str, Mapping[str, Any]]) -> list[str]:
    splits = list(data)
    views = list(data[splits[0]])
    if not views:
        raise NeardupInputError(
            f"split {splits[0]!r} has no views: data must map split -> {{view -> array}} with "
            "at least one view."
        )
    for split in splits[1:]:
        missing = [v for v in views if v not in data[split]]
        extra = [v for v in data[split] if v not in views]
        if missing or extra:
            raise NeardupInputError(
                f"every split needs the same views: split {split!r} "
                + (f"lacks {missing}" if missing else f"has extra {extra}")
                + f" (split {splits[0]!r} has {views})."
            )
    return views


def _datasets(
    data: Mapping[str, Mapping[str, Any]], views: list[str], labels: Any, ids: Any
) -> dict[str, Dataset]:
    out: dict[str, Dataset] = {}
    for view in views:
        try:
            out[view] = prepare({s: data[s][view] for s in data}, labels=labels, ids=ids)
        except NeardupInputError as err:
            raise NeardupInputError(f"view {view!r}: {err}") from err
        first = out[views[0]]
        if out[view].sizes != first.sizes:
            bad = next(i for i, (a, b) in enumerate(zip(out[view].sizes, first.sizes)) if a != b)
            raise NeardupInputError(
                f"views must describe the same samples: split {first.names[bad]!r} has "
                f"{first.sizes[bad]} rows in view {views[0]!r} but {out[view].sizes[bad]} in "
                f"view {view!r}."
            )
    return out


def _image_rows(
    data: Mapping[str, Mapping[str, Any]], views: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[ImageRows]]]:
    """Replace every :class:`ImageRows` view by its 8x8 thumbnail view (and, for colour images,
    its luma and YCbCr views ``<view>-luma`` and ``<view>-ycbcr`` beside it); return the new
    data and
    ``view -> [ImageRows per split]`` for the aligned views."""
    aligned = [v for v in views if any(isinstance(data[s][v], ImageRows) for s in data)]
    if not aligned:
        return {s: dict(data[s]) for s in data}, {}
    out = {s: dict(data[s]) for s in data}
    kept: dict[str, list[ImageRows]] = {}
    for view in aligned:
        parts = [data[s][view] for s in data]
        if (
            not all(isinstance(p, ImageRows) for p in parts)
            or len({(p.side, p.channels) for p in parts}) > 1
        ):
            raise NeardupInputError(
                f"view {view!r}: every split must hold AlignedImageView rows of the same "
                "thumbnail size (call the same AlignedImageView(side=...) on every split)."
            )
        kept[view] = parts
        # the rows already carry AlignedImageView's colour-cast weight: apply it once (twice,
        # a colour thumbnail's cast would shrink to 1/16, a YCbCr one's chroma cast with it);
        # ImageView.views caps the colour thumbnail's cast at its structure
        thumbnail = ImageView(size=8, color_cast=1.0)
        for split, part in zip(data, parts):
            # colour images: the colour thumbnail, its luma ("<view>-luma") and its YCbCr
            # thumbnail ("<view>-ycbcr"), see ImageView.views
            images = part.images()
            for name, rows in thumbnail.views(images).items():
                out[split][view + name[len(thumbnail.name) :]] = rows
    return out, kept


def _lopsided_views(
    image_rows: dict[str, list[ImageRows]],
) -> dict[str, tuple[Callable[[np.ndarray], np.ndarray], bool]]:
    """The 8x8 views that take the routes beyond the cut (:mod:`neardup._lopsided_run`):
    the colour thumbnail and the YCbCr view of every view of colour :class:`ImageRows`
    (where faint pictures' noisy and JPEG copies lie beyond the cut; the luma and aligned
    views of the same pictures do not need it, and the aligned view has its lone route),
    each with a reader of its full-resolution thumbnails (global rows -> ``(n, R, R, C)``)
    and whether it takes the lopsided route too: the YCbCr view only. In the colour thumbnail
    that route added no planted copy on four plantings of colourised Fashion-MNIST
    (``bench_quality.py --only noise,colour`` and ``--only colour``, seeds 0 and 1) and
    flagged a different tank top in similar colours (at 0.999 of its level); the colour
    thumbnail takes the white-residual route alone."""
    out = {}
    for view, parts in image_rows.items():
        if parts[0].channels >= 3:
            reader = _image_reader(parts)
            out[view], out[view + _YCBCR_SUFFIX] = (reader, False), (reader, True)
    return out


def _image_reader(parts: list[ImageRows]) -> Callable[[np.ndarray], np.ndarray]:
    """Global rows (the splits' ``parts`` stacked in order) -> ``(n, R, R, C)`` float32
    thumbnails, read from the parts without stacking them."""
    offsets = np.cumsum([0] + [len(p) for p in parts])
    side, channels = parts[0].side, parts[0].channels

    def read(rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), side, side, channels), dtype=np.float32)
        split = np.searchsorted(offsets, rows, side="right") - 1
        for number, part in enumerate(parts):
            mine = split == number
            local = np.asarray(part)[rows[mine] - offsets[number]]
            out[mine] = local.reshape(-1, side, side, channels)
        return out

    return read


def _is_auto(threshold: Any) -> bool:
    """Whether a view's threshold option is the default ``Auto`` (``None`` or an ``Auto``)."""
    return threshold is None or isinstance(as_strategy(threshold), Auto)


def _texts(data: Mapping[str, Mapping[str, Any]], views: list[str]) -> dict[str, list[str]]:
    """``view -> texts of all splits in order`` for the views that hold :class:`TextRows`
    with their texts in every split (the views the word check applies to): each text's
    :func:`~neardup.views.grouped_words` where known (a dropped URL is one word dropped),
    else its normalised text."""
    out = {}
    for view in views:
        parts = [data[s][view] for s in data]
        if all(isinstance(p, TextRows) and p.texts is not None for p in parts):
            out[view] = [
                grouped or text
                for p in parts
                for text, grouped in zip(p.texts, p.grouped or ("",) * len(p.texts))
            ]
    return out


def _word_check(relative: np.ndarray, i: np.ndarray, j: np.ndarray, texts: list[str]) -> int:
    """Check the words of the pairs ``(i, j)`` within :data:`~neardup.views.WORD_REACH`
    thresholds, in place: a pair whose words confirm it
    (:attr:`~neardup.views.WordEdits.confirmed`) has its ``relative`` distance divided by the
    reach; a pair within the threshold whose words fail
    (:attr:`~neardup.views.WordEdits.related`) is set to inf. Returns how many pairs within
    the threshold the check turned away."""
    checked = np.flatnonzero(relative <= WORD_REACH)
    edits = [word_edits(texts[i[p]], texts[j[p]]) for p in checked]
    confirmed = np.asarray([e.confirmed for e in edits], dtype=bool)
    failed = np.asarray([not e.related for e in edits], dtype=bool) & (relative[checked] <= 1.0)
    relative[checked[confirmed]] /= WORD_REACH
    relative[checked[failed]] = np.inf
    return int(np.count_nonzero(failed))


def _color_gate(
    relative: dict[str, np.ndarray],
    runs: dict[str, ViewRun],
    image_rows: dict[str, list[ImageRows]],
    i: np.ndarray,
    j: np.ndarray,
) -> dict[str, int]:
    """Divide ``relative`` (in place) in the luma view of colour images by
    :data:`~neardup._aligned_run.RECOLORED_REACH` for the re-coloured pairs ``(i, j)``
    (principal colour axes that disagree, or colour casts that point apart), as the aligned
    view does (see :meth:`~neardup._aligned_run.AlignedRun.color_axes_agree`), and set it
    to ``inf`` in the YCbCr view for the pairs the colour thumbnail puts beyond
    :data:`YCBCR_THUMBNAIL_REACH` of its threshold; return, per gated view, how many pairs
    within its threshold this turned away.

    The luma view is blind to the colours that paint a picture: it finds re-coloured copies
    (greyscale, channels swapped), and one shape painted in other colours lies as close in
    it. Measured on colourised Fashion-MNIST (benchmarks/README.md, "Round 13"): the
    controls' look-alikes in this view lay at 0.82-0.98 of its cut, greyscale copies at a
    median of 0.10."""
    out: dict[str, int] = {}
    for view, parts in image_rows.items():
        name = view + _LUMA_SUFFIX
        if parts[0].channels < 3 or name not in relative or not len(i):
            continue
        recolored = ~runs[view + ALIGNED_SUFFIX].color_axes_agree(i, j)
        before = relative[name] <= 1.0
        relative[name][recolored] /= RECOLORED_REACH
        out[name] = int(np.count_nonzero(before & (relative[name] > 1.0)))
        ycbcr = view + _YCBCR_SUFFIX
        if ycbcr in relative and view in relative:
            # faint pictures of one hue: close in the YCbCr view, far in the colour thumbnail
            # (not close at any distance: nor within a confirm rule's reach)
            apart = relative[view] > YCBCR_THUMBNAIL_REACH
            out[ycbcr] = int(np.count_nonzero(apart & (relative[ycbcr] <= 1.0)))
            relative[ycbcr][apart] = np.inf
    return out


def _confirming(
    view: str,
    views: list[str],
    image_rows: dict[str, list[ImageRows]],
    texts: Mapping[str, list[str]],
) -> tuple[list[str], float]:
    """The views that confirm for a ``"confirm:<view>"`` rule, and how many of their
    thresholds a pair may lie from them: an image view's pixel views within
    :data:`IMAGE_CONFIRM_WITHIN`, a text view with its texts (``texts``) within its own
    threshold (its word reach included), any other view alone within
    :data:`CONFIRM_WITHIN`."""
    if view in texts:
        return [view], 1.0
    if view not in image_rows:
        return [view], CONFIRM_WITHIN
    derived = (view + ALIGNED_SUFFIX, view + _LUMA_SUFFIX, view + _YCBCR_SUFFIX)
    return [view] + [v for v in derived if v in views], IMAGE_CONFIRM_WITHIN


def _relative(distance: np.ndarray, threshold: float) -> np.ndarray:
    """Distances in threshold units (a zero threshold: 0 for exact copies, inf otherwise)."""
    if threshold > 0:
        return distance.astype(np.float64) / threshold
    return np.where(distance > 0, np.inf, 0.0)


def _combined_pairwise(runs: dict[str, ViewRun]) -> PairwiseFn:
    members = [run.pairwise() for run in runs.values()]

    def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = members[0](a, b)
        for more in members[1:]:
            np.minimum(out, more(a, b), out=out)
        return out

    return pairwise


def _candidate_pairs(
    runs: dict[str, ViewRun],
    split_of_row: np.ndarray,
    ref_index: int | None,
    routes: dict[str, MarkupRoute],
) -> tuple[np.ndarray, np.ndarray]:
    """Unique row pairs ``(i, j)``, ``i < j``, close in at least one view (or its reach, or
    its markup route)."""
    n = len(split_of_row)
    rows = [route.i for route in routes.values()]
    cols = [route.j for route in routes.values()]
    for run in runs.values():
        rows.extend((run.pairs.i, run.reach_pairs.i))
        cols.extend((run.pairs.j, run.reach_pairs.j))
        if ref_index is not None and run.nearest is not None:
            # a kNN-graph backend: eval rows whose reference copy lies beyond the k-th
            best, _ = run.nearest
            hit = np.flatnonzero(best >= 0)
            rows.append(hit)
            cols.append(best[hit])
    i = np.concatenate(rows).astype(np.int64)
    j = np.concatenate(cols).astype(np.int64)
    keep = (i != j) & (j >= 0)
    lo, hi = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
    key = distinct(lo * n + hi)
    return key // n, key % n


def find_duplicates_multiview(
    data: Mapping[str, Mapping[str, Any]],
    *,
    labels: Any = None,
    ids: Any = None,
    threshold: Any = None,
    normalize: Any = "row",
    reduce: Any = None,
    k: int = 10,
    backend: Backend | str = "auto",
    reference: str | None = "train",
    seed: int = 0,
    combine: str = "any",
    max_diameter: float | None = None,
    progress: ProgressFn | None = None,
) -> DuplicatesResult:
    """:func:`neardup.find_duplicates` on ``split -> {view -> array}``: one combined verdict."""
    check_combine(combine)
    max_diameter = check_max_diameter(max_diameter)
    views = _view_names(data)
    data, image_rows = _image_rows(data, views)
    texts = _texts(data, views)
    views = list(data[next(iter(data))])  # with the luma/YCbCr views of colour images
    check_combine(combine, views)
    thresholds = _per_view(threshold, "threshold", views, None)
    normalizes = _per_view(normalize, "normalize", views, "row")
    datasets = _datasets(data, views, labels, ids)
    dataset = datasets[views[0]]
    ref_index = None
    if reference is not None and len(dataset.names) > 1:
        ref_index = split_index(reference, dataset.names, what="reference split")
    runs: dict[str, ViewRun] = {}
    per_view: dict[str, DuplicatesResult] = {}
    lopsided = _lopsided_views(image_rows)
    for view in views:
        try:
            runs[view] = analyse_view(
                datasets[view],
                threshold=thresholds[view],
                normalize=normalizes[view],
                reduce=reduce,
                k=k,
                backend=backend,
                reference_index=ref_index,
                seed=seed,
                progress=progress,
                text=text_source([data[split][view] for split in data]),
                reach=WORD_REACH if view in texts else 1.0,
            )
        except NeardupInputError as err:
            raise NeardupInputError(f"view {view!r}: {err}") from err
        if view in lopsided and _is_auto(thresholds[view]):
            reader, lopsided_route = lopsided[view]
            runs[view] = with_lopsided(
                runs[view],
                datasets[view].split_of_row,
                ref_index,
                k,
                reader,
                lopsided=lopsided_route,
            )
        per_view[view] = single_view_result(
            runs[view], datasets[view], ref_index, max_diameter=max_diameter, layer=view
        )
        if view in image_rows:  # its aligned view: candidate pairs re-scored over shifts
            name = view + ALIGNED_SUFFIX
            runs[name] = aligned_run(
                image_rows[view],
                datasets[view].split_of_row,
                ref_index,
                threshold=thresholds[view],
            )
            per_view[name] = single_view_result(
                runs[name], datasets[view], ref_index, max_diameter=max_diameter, layer=name
            )
    views = list(runs)

    split_of_row = dataset.split_of_row
    n = len(split_of_row)
    confirm = confirming_view(combine)
    routes = {
        v: route
        for v, words in texts.items()
        if (route := markup_route(runs[v], [data[s][v] for s in data], words, seed=seed))
        is not None
    }
    i, j = _candidate_pairs(runs, split_of_row, ref_index, routes)
    distance = {v: run.pair_distances(i, j) for v, run in runs.items()}
    relative = {v: runs[v].relative(i, j, distance[v]) for v in views}
    turned_away = {v: _word_check(relative[v], i, j, words) for v, words in texts.items()}
    for v, route in routes.items():  # the markup words of texts with markup
        np.minimum(relative[v], route.relative(runs[v], i, j, texts[v]), out=relative[v])
    gated = _color_gate(relative, runs, image_rows, i, j)
    score = np.min(np.stack(list(relative.values())), axis=0) if len(i) else np.zeros(0)
    close = score <= 1.0  # "any": within the threshold of at least one view
    reach, unconfirmed = None, 0
    if confirm is not None:
        family, reach = _confirming(confirm, views, image_rows, texts)
        confirmed = np.min(np.stack([relative[v] for v in family]), axis=0) <= reach
        unconfirmed = int(np.count_nonzero(close & ~confirmed))
        close &= confirmed
    i, j, score = i[close], j[close], score[close]
    relative = {v: r[close] for v, r in relative.items()}
    distance = {v: d[close] for v, d in distance.items()}

    pairwise = _combined_pairwise(runs)
    assignment = ClusterAssignment(n, i, j)
    if max_diameter is not None:
        assignment = assignment_from_members(
            n, split_chains(assignment.members, pairwise, max_diameter)
        )
    diameters = set_diameters(assignment.members, pairwise)
    stats_x, local = _joint_rows(runs, assignment)
    leakage = (
        _combined_leakage(dataset, ref_index, i, j, score, relative, distance)
        if ref_index is not None
        else {}
    )
    raw_counts, effective = class_counts(dataset, assignment, ref_index)
    nearest, nearest_row = _nearest_relative(runs)
    return DuplicatesResult(
        split_sizes=dict(zip(dataset.names, dataset.sizes)),
        reference=None if ref_index is None else dataset.names[ref_index],
        threshold=ResolvedThreshold(
            strategy="Views",
            params={"combine": combine},
            value=1.0,
            reason="; ".join(f"{v}: {run.threshold}" for v, run in runs.items()),
        ),
        clusters=duplicate_sets(stats_x, assignment, dataset, diameters, local=local),
        leakage=leakage,
        class_counts=raw_counts,
        effective_class_counts=effective,
        histogram=histogram(nearest, nearest_row, split_of_row, 1.0),
        settings={
            "views": views,
            "combine": combine,
            "confirm_within": reach,
            "unconfirmed": unconfirmed,
            "word_check": turned_away,
            "color_gate": gated,
            "max_diameter": max_diameter,
            "units": "threshold",
            "k": runs[views[0]].settings["k"],
            "backend": ",".join(dict.fromkeys(r.settings["backend"] for r in runs.values())),
            "normalize": ",".join(
                dict.fromkeys(str(r.settings["normalize"]) for r in runs.values())
            ),
            "dim": int(sum(r.settings["dim"] for r in runs.values())),
            "seed": seed,
        },
        views=per_view,
    )


def _joint_rows(
    runs: dict[str, ViewRun], assignment: ClusterAssignment
) -> tuple[np.ndarray, np.ndarray]:
    """Member rows of all sets in the joint space (each view divided by its threshold).

    Returns the ``(M, sum of d)`` rows and ``local`` ``(N,)``: each global row's position
    among them (-1 for rows in no set).
    """
    n = len(assignment.label)
    rows = np.flatnonzero(assignment.label >= 0)
    local = np.full(n, -1, dtype=np.int64)
    local[rows] = np.arange(len(rows))
    parts = []
    for run in runs.values():
        scale = run.threshold.value if run.threshold.value > 0 else 1.0
        parts.append(run.take(rows).astype(np.float32) / np.float32(scale))
    return np.concatenate(parts, axis=1), local


def _nearest_relative(runs: dict[str, ViewRun]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest neighbour over all views, in threshold units, and that neighbour.

    Rows no view's graph lists (the ``Cells`` backend's graph covers a seeded sample) get
    ``inf`` and ``-1``.
    """
    n = next(iter(runs.values())).rows.n
    best = np.full(n, np.inf)
    best_row = np.full(n, -1, dtype=np.int64)
    for run in runs.values():
        query = run.graph.query_rows
        rel = _relative(run.graph.distances[:, 0], run.threshold.value)
        row = run.graph.indices[:, 0]
        better = rel < best[query]
        best[query[better]] = rel[better]
        best_row[query[better]] = row[better]
    return best.astype(np.float32), best_row


def _combined_leakage(
    dataset: Dataset,
    ref_index: int,
    i: np.ndarray,
    j: np.ndarray,
    score: np.ndarray,
    relative: dict[str, np.ndarray],
    distance: dict[str, np.ndarray],
) -> dict[str, Leakage]:
    """Per evaluation split, each sample's best-scoring reference partner among the pairs."""
    split_of_row = dataset.split_of_row
    n = len(split_of_row)
    in_ref_i = split_of_row[i] == ref_index
    in_ref_j = split_of_row[j] == ref_index
    cross = in_ref_i ^ in_ref_j
    evals = np.where(in_ref_i, j, i)[cross]
    refs = np.where(in_ref_i, i, j)[cross]
    score = score[cross]
    pick = first_per_source(evals, refs, score)  # per eval row: best score, ties by row
    best_ref = np.full(n, -1, dtype=np.int64)
    best_score = np.full(n, np.inf, dtype=np.float32)
    best_pair = np.full(n, -1, dtype=np.int64)
    best_ref[evals[pick]] = refs[pick]
    best_score[evals[pick]] = score[pick]
    best_pair[evals[pick]] = np.flatnonzero(cross)[pick]
    out = leakage_by_split(best_ref, best_score, dataset, ref_index)
    names = list(relative)
    offsets = dataset.offsets
    for s, name in enumerate(dataset.names):
        if name not in out:
            continue
        leak = out[name]
        pairs = best_pair[offsets[s] : offsets[s + 1]][np.asarray(leak.positions, dtype=np.int64)]
        leak.found_by = [[v for v in names if relative[v][p] <= 1.0] for p in pairs]
        leak.view_distances = {v: distance[v][pairs].astype(np.float32) for v in names}
    return out
