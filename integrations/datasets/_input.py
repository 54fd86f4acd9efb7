"""The input view of ``find_leakage``: which column it reads and its rows (text or images).

Text columns get :class:`neardup.views.TextView` (rows that keep their normalised texts for
the word check of :func:`neardup.find_duplicates`), ``Image()`` columns
:class:`neardup.views.AlignedImageView` (8x8 thumbnails plus the aligned view that finds
shifted and cropped copies; its thumbnail side is set by the first chunk); rows are computed
chunk by chunk so that images are decoded a chunk at a time.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from datasets import Dataset, Image, Value

from neardup import NeardupInputError
from neardup.validators import closest_names
from neardup.views import AlignedImageView, TextRows, TextView, as_image_rows, as_text_rows

__all__ = ["input_column", "input_rows"]

_TEXT_NAMES = ("text", "sentence", "content", "body", "document")
_INPUT_CHUNK = 1024  # examples viewed at a time (images are decoded chunk by chunk)


def _is_string(feature: Any) -> bool:
    return isinstance(feature, Value) and feature.dtype in ("string", "large_string")


def input_column(
    parts: Mapping[str, Dataset], input_column: Any, taken: tuple[Any, ...]
) -> tuple[str, str] | None:
    """``(column, "image" | "text" | "other")`` the input view reads, or None for no view."""
    if input_column is None:
        return None
    features = next(iter(parts.values())).features
    if input_column != "auto":
        if not isinstance(input_column, str):
            raise NeardupInputError(
                f"input_column must be a column name, 'auto' or None, got {input_column!r}."
            )
        for name, ds in parts.items():
            if input_column not in ds.column_names:
                raise NeardupInputError(
                    f"split {name!r} has no column {input_column!r} "
                    f"({closest_names(input_column, ds.column_names)}); pass input_column= "
                    "the text or image column, or None for no input view."
                )
        feature = features.get(input_column)
        kind = "image" if isinstance(feature, Image) else "text" if _is_string(feature) else "other"
        return input_column, kind
    free = {k: f for k, f in features.items() if k not in taken}
    images = [k for k, f in free.items() if isinstance(f, Image)]
    if len(images) == 1:
        return images[0], "image"
    texts = [k for k, f in free.items() if _is_string(f)]
    named = [k for k in texts if k.lower() in _TEXT_NAMES]
    if named:
        return named[0], "text"
    if len(texts) == 1:
        return texts[0], "text"
    if len(images) + len(texts) > 1:
        warnings.warn(
            f"find_leakage: several columns could feed the input view ({images + texts}); "
            "none is used. Pass input_column= the text or image column (or None).",
            stacklevel=3,
        )
    return None


def input_rows(ds: Dataset, source: tuple[str, str], input_view: Any, where: str) -> np.ndarray:
    """``(n, d)`` float32 rows of the input view over ``ds[column]``, viewed chunk by chunk:
    :class:`~neardup.views.ImageRows` for an ``Image()`` column under ``input_view="auto"``
    (``find_duplicates`` derives its thumbnail, luma, YCbCr and aligned views), and
    :class:`~neardup.views.TextRows` with every text's normalised, markup and grouped words
    for a text column (the word check and the markup route)."""
    column, kind = source
    if input_view == "auto":
        if kind == "other":
            raise NeardupInputError(
                f"{where}: input column {column!r} is neither text nor an Image() column; "
                "pass input_view= a callable view(values) -> (n, d) array, or "
                "input_column=None."
            )
        view: Any = TextView() if kind == "text" else None
    else:
        view = input_view
    parts: list[np.ndarray] = []
    texts: list[str] | None = []  # the normalised texts of TextView rows (the word check)
    ngrams: set[int | None] = set()  # their gram length
    markup: list[str] | None = []  # their markup words ("": none), while every batch has them
    grouped: list[str] | None = []  # their grouped words ("": none), likewise
    for start in range(0, len(ds), _INPUT_CHUNK):
        values = ds.select_columns([column])[start : start + _INPUT_CHUNK][column]
        if view is None:  # an AlignedImageView whose colour and side the first chunk decides
            first = AlignedImageView()
            view = AlignedImageView(side=first.side_for(values), color=_has_colour(values))
        viewed = view(values)
        if texts is not None and isinstance(viewed, TextRows) and viewed.texts is not None:
            texts.extend(viewed.texts)
            ngrams.add(viewed.ngram)
            if markup is not None and viewed.markup is not None:
                markup.extend(viewed.markup)
            else:
                markup = None
            if grouped is not None and viewed.grouped is not None:
                grouped.extend(viewed.grouped)
            else:
                grouped = None
        else:
            texts = None
        rows = np.asarray(viewed)
        if rows.ndim < 1 or len(rows) != len(values) or rows.dtype.kind not in "biuf":
            raise NeardupInputError(
                f"{where}: the input view returned {rows.dtype} values of shape {rows.shape} "
                f"for {len(values)} examples; it must return a numeric (n, d) array."
            )
        parts.append(np.ascontiguousarray(rows.reshape(len(rows), -1), dtype=np.float32))
    if not parts:
        raise NeardupInputError(f"{where} has no rows; drop the empty split.")
    rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if isinstance(view, AlignedImageView):
        return as_image_rows(rows)
    ngram = ngrams.pop() if len(ngrams) == 1 else None
    return rows if texts is None else as_text_rows(rows, texts, ngram, markup, grouped)


def _has_colour(images: list[Any]) -> bool:
    """Whether any image of a chunk (PIL or array) has three or more channels."""
    for image in images:
        mode = getattr(image, "mode", None)
        if mode is not None:
            if mode not in ("L", "1", "I", "F", "I;16", "LA", "P"):
                return True
        elif np.ndim(image) == 3 and np.shape(image)[-1] >= 3:
            return True
    return False
