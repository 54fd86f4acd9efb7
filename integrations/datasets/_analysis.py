"""``find_leakage``: near-duplicates and leakage from a vector column and the input column."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, Features, IterableDataset, IterableDatasetDict, Value

from neardup import DuplicatesResult, NeardupInputError, find_duplicates
from neardup.validators import ANALYSIS_OPTIONS, check_options, closest_names
from neardup.views import ImageRows

from .._views import INPUT_VIEW, check_input_view
from ._arrow import read_plain, read_vectors
from ._input import input_column as choose_input_column
from ._input import input_rows
from ._stream import is_streaming, materialized, viewable_columns

__all__ = ["find_leakage"]

_RESERVED_OPTIONS = {
    "labels": "label_column=",
    "ids": "id_column=",
    "data": "the first argument",
}


def _check_whole(splits: list[str] | None) -> None:
    """A single (streaming) Dataset takes no ``splits=``."""
    if splits is not None:
        raise NeardupInputError(
            "splits= only applies to a DatasetDict; a single Dataset is analysed whole "
            "(duplicates within it)."
        )


def _split_map(
    data: Any, splits: list[str] | None, reference: str | None
) -> tuple[dict[str, Dataset], bool]:
    """``split -> Dataset`` to analyse, and whether the input was a single Dataset."""
    if isinstance(data, Dataset):
        _check_whole(splits)
        return {"data": data}, True
    if not isinstance(data, DatasetDict):
        raise NeardupInputError(
            f"find_leakage takes a datasets.DatasetDict (leakage across splits) or a Dataset "
            f"(duplicates within it), or their streaming IterableDataset forms, got "
            f"{type(data).__name__}."
        )
    names = list(data) if splits is None else list(splits)
    if not names:
        raise NeardupInputError("the DatasetDict has no splits.")
    for name in names:
        if name not in data:
            raise NeardupInputError(
                f"split {name!r} is not in the DatasetDict ({closest_names(name, list(data))})."
            )
    if reference is not None and len(names) > 1 and reference not in names:
        raise NeardupInputError(
            f"reference split {reference!r} is not among the analysed splits {names} "
            f"({closest_names(reference, names)}); pass reference= the training split's name, "
            "or reference=None to skip leakage."
        )
    return {name: data[name] for name in names}, False


def find_leakage(
    data: DatasetDict | Dataset,
    *,
    column: str | None = "neardup_embedding",
    input_column: str | None = "auto",
    input_view: Any = "auto",
    label_column: str | None = None,
    id_column: str | None = None,
    splits: list[str] | None = None,
    reference: str | None = "train",
    html: str | os.PathLike[str] | None = None,
    sample_column: str | None = None,
    **options: Any,
) -> DuplicatesResult:
    """Near-duplicates and train/test leakage from a vector column and the input column.

    Two *views* of every example are analysed together by default: the vector column (e.g.
    MiniLM activations written by :class:`ActivationHook`) and an *input view* of the text or
    image column (:class:`neardup.views.TextView` character n-grams: case, punctuation,
    markup and whitespace edits leave a copy identical; :class:`neardup.views.ImageView`
    thumbnails for an ``Image()`` column). Each view gets its own automatic threshold; the
    result is the combined verdict (a pair is a near-duplicate when it is within the
    threshold of any view; ``leakage[split].found_by`` says which) and ``result.views[view]``
    holds each view's own result (views named ``column`` and ``"input"``). For a text column
    the default rule is ``combine="confirm:input"``: a pair the embedding finds must also be
    within the text view's threshold (an embedding's natural neighbours, paraphrases
    and templated sentences, are far apart in their characters; on pydoc sentences this
    removed most false alarms and no planted edit); pass ``combine="any"`` to keep every
    pair any view finds. The text view also checks the words of each pair
    (:func:`neardup.views.word_edits`): a pair whose words were replaced rather than dropped,
    added or misspelt (a templated sentence: "... in base 8" / "... in base 10") is not
    confirmed, and ``result.settings["word_check"]`` counts such pairs.

    Parameters
    ----------
    data:
        A ``DatasetDict`` (every split, or those in ``splits``, checked against
        ``reference``) or one ``Dataset`` (duplicates within it; its split is ``"data"``).
    column:
        The vector column (fixed-size or variable-length lists of numbers, any nesting);
        ``None``: the input view only.
    input_column:
        The column the input view reads. ``"auto"`` (default): the only ``Image()`` column,
        else a string column named ``text``/``sentence``/``content``/``body``/``document``,
        else the only string column (none: no input view). ``None``: no input view.
    input_view:
        ``"auto"``: ``TextView()`` for strings, ``ImageView()`` for images; or a callable
        ``view(list of values) -> (n, d)`` array.
    label_column, id_column:
        Optional columns with per-example labels (int/ClassLabel/str: per-class leakage) and
        ids (unique per split). Without ids, samples are named by their row position.
    reference:
        The split other splits are checked against (``None``: duplicate sets only).
    html:
        Also write the HTML report to this path, with thumbnails (``Image()`` columns or any
        array column) or texts read from the datasets, row by row, for the samples shown.
    sample_column:
        The column shown in the report (default: the first ``Image()`` column, else the
        first string column).
    **options:
        Any option of :func:`neardup.find_duplicates` (threshold, normalize, reduce, k,
        backend, seed, ...).

    Returns
    -------
    neardup.DuplicatesResult
        Positions in it are row positions within each split, as the datasets are now.
    """
    for bad, hint in _RESERVED_OPTIONS.items():
        if bad in options:
            raise NeardupInputError(
                f"find_leakage reads {bad} from the datasets; use {hint} instead of {bad}=."
            )
    check_options(
        {**options, "reference": reference},
        where="find_leakage",
        allowed=(*ANALYSIS_OPTIONS, "layer"),
    )
    check_input_view(input_view)
    if is_streaming(data):
        shown = None if html is None else sample_column or "auto"
        data = _read_stream(data, splits, column, input_column, label_column, id_column, shown)
    parts, single = _split_map(data, splits, reference)
    source = choose_input_column(parts, input_column, (column, label_column, id_column))
    if column is None and source is None:
        raise NeardupInputError(
            "find_leakage needs a vector column (column=) or an input column to view "
            "(input_column=); both are None or none was found."
        )
    if column is not None and column == INPUT_VIEW and source is not None:
        raise NeardupInputError(
            f"the vector column is named {INPUT_VIEW!r}, the input view's name; pass "
            "input_column=None or rename the column."
        )
    vectors, labels, ids = {}, {}, {}
    aligned = False  # the input view gives image rows (analysed as thumbnail + aligned views)
    for name, ds in parts.items():
        where = "the dataset" if single else f"split {name!r}"
        views = {}
        if column is not None:
            views[column] = read_vectors(ds, column, where)
        if source is not None:
            views[INPUT_VIEW] = input_rows(ds, source, input_view, where)
        # image rows are analysed as two views (thumbnail + aligned): keep the name "input"
        aligned = aligned or isinstance(views.get(INPUT_VIEW), ImageRows)
        vectors[name] = views if len(views) > 1 or aligned else next(iter(views.values()))
        if label_column is not None:
            labels[name] = read_plain(ds, label_column, where, "label")
        if id_column is not None:
            ids[name] = read_plain(ds, id_column, where, "id")
    several = any(isinstance(v, dict) for v in vectors.values())
    if column is not None and source is not None and (source[1] == "text" or aligned):
        # the text's characters or the image's pixels confirm what the embedding finds (its
        # paraphrases and look-alikes are not)
        options.setdefault("combine", f"confirm:{INPUT_VIEW}")
    layer = options.pop("layer", None)
    if not several:  # one view: its name is the result's layer
        options["layer"] = layer or (column if column is not None else INPUT_VIEW)
    if single:
        data_views = vectors["data"]
        result = find_duplicates(
            {"data": data_views} if isinstance(data_views, dict) else data_views,
            labels=labels.get("data"),
            ids=ids.get("data"),
            **options,
        )
    else:
        result = find_duplicates(
            vectors,
            labels=labels or None,
            ids=ids or None,
            reference=reference,
            **options,
        )
    if html is not None:
        shown = _sample_column(parts, sample_column, column)
        samples = (
            None if shown is None else {n: _ColumnSamples(ds, shown) for n, ds in parts.items()}
        )
        result.to_html(html, samples=samples)
    return result


def _read_stream(
    data: IterableDataset | IterableDatasetDict,
    splits: list[str] | None,
    column: str | None,
    input_column: Any,
    label_column: str | None,
    id_column: str | None,
    sample_column: str | None,
) -> Dataset | DatasetDict:
    """A streaming dataset read once into memory, with only the columns the analysis reads.

    ``sample_column="auto"``: the report shows samples and picks their column itself.
    """
    if isinstance(data, IterableDataset):
        _check_whole(splits)  # before the stream is read
    elif splits is not None and all(name in data for name in splits):  # else _split_map
        data = IterableDatasetDict({name: data[name] for name in splits})  # names the missing
    named = {column, label_column, id_column}
    if input_column != "auto":
        named.add(input_column)
    if sample_column != "auto":
        named.add(sample_column)
    named.discard(None)
    views_chosen = input_column == "auto" or sample_column == "auto"

    def keep(features: Features) -> set[Any]:
        return named | set(viewable_columns(features)) if views_chosen else named

    return materialized(data, keep, required=sorted(named))


class _ColumnSamples:
    """One column of a Dataset as a lazy sequence: rows are read only for samples shown."""

    def __init__(self, ds: Dataset, column: str) -> None:
        self.ds, self.column = ds, column

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, position: int) -> Any:
        return self.ds[int(position)][self.column]


def _sample_column(parts: Mapping[str, Dataset], chosen: str | None, vectors: str) -> str | None:
    """The column to show in the report: ``chosen``, else an Image(), else a string column."""
    if chosen is not None:
        for name, ds in parts.items():
            if chosen not in ds.column_names:
                raise NeardupInputError(
                    f"sample_column {chosen!r} is not a column of split {name!r} "
                    f"({closest_names(chosen, ds.column_names)})."
                )
        return chosen
    features = next(iter(parts.values())).features
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name
    for name, feature in features.items():
        text = isinstance(feature, Value) and feature.dtype in ("string", "large_string")
        if name != vectors and text:
            return name
    return None
