"""The input view of the integrations and the analysis of several views into one verdict.

Framework-free (numpy and the core only). Every integration collects, beside the model
layer(s), an *input view* of the samples it sees: :class:`neardup.views.ImageView`
thumbnails for image-like inputs, :class:`neardup.views.TextView` n-grams for texts. The
layers and the input view are then analysed together by :func:`analyze_views`, which returns
the combined verdict of :func:`neardup.find_duplicates` (``result.leakage[split]``, with
``found_by`` per pair) and each view's own result in ``result.views``.

``input_view=`` of every integration takes:

- ``"auto"`` (default): decide from the first batch (:func:`auto_input_view`); colour images
  give three input views, ``"input"`` (the colour thumbnail), ``"input-luma"`` (its luma)
  and ``"input-ycbcr"`` (luma with half-resolution chroma), as
  :meth:`neardup.views.ImageView.views` does;
- ``None``: no input view (the layers only);
- a callable ``view(inputs) -> (B, d) array``, e.g. ``ImageView(size=16)``, ``TextView()`` or
  any function of the raw inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from neardup import DuplicatesResult, NeardupInputError, find_duplicates
from neardup.validators import closest_names
from neardup.views import (
    AlignedImageView,
    ImageView,
    TextRows,
    TextView,
    as_image_rows,
    as_text_rows,
)

__all__ = [
    "INPUT_LUMA_VIEW",
    "INPUT_VIEW",
    "INPUT_YCBCR_VIEW",
    "InputView",
    "analyze_views",
    "auto_input_view",
    "check_combine_view",
    "check_input_view",
    "check_view_names",
    "first_rows",
    "input_view_rows",
]

#: the name of the input view among the views (beside the layer names)
INPUT_VIEW = "input"
#: the luma input view beside it, for colour images under ``input_view="auto"``
INPUT_LUMA_VIEW = "input-luma"
#: ... and its YCbCr view (luma with half-resolution chroma)
INPUT_YCBCR_VIEW = "input-ycbcr"
_IMAGE_CHANNELS = (1, 3, 4)
_MIN_SIDE = 8  # smaller "images" are more likely feature vectors or sequences
_ALIGNED = (
    "8x8 standardised thumbnails (and, for colour images, their luma 'input-luma' and YCbCr "
    "'input-ycbcr' views), and "
    "candidate pairs re-aligned over shifts and crops"
)


def check_input_view(input_view: Any) -> Any:
    """Validate ``input_view=``: ``"auto"``, ``None`` or a callable ``view(inputs)``."""
    if input_view is None or input_view == "auto" or callable(input_view):
        return input_view
    raise NeardupInputError(
        f"input_view={input_view!r} is not supported; use 'auto' (an image thumbnail or text "
        "view chosen from the inputs), None (model layers only), or a callable "
        "view(inputs) -> (batch, features) array such as neardup.views.ImageView(size=16)."
    )


def _as_numpy(inputs: Any) -> Any:
    """A torch/TF tensor as numpy (no framework import); anything else as it is."""
    if hasattr(inputs, "detach") and hasattr(inputs, "cpu"):  # torch
        return inputs.detach().cpu().numpy()
    if not isinstance(inputs, np.ndarray) and callable(getattr(inputs, "numpy", None)):
        return inputs.numpy()  # tf / keras tensors
    return inputs


def _is_text(inputs: Any) -> bool:
    if isinstance(inputs, np.ndarray):
        return (
            inputs.ndim == 1
            and inputs.dtype.kind in "USO"
            and (inputs.dtype.kind != "O" or all(isinstance(v, (str, bytes)) for v in inputs[:8]))
        )
    return (
        isinstance(inputs, Sequence)
        and not isinstance(inputs, (str, bytes))
        and len(inputs) > 0
        and all(isinstance(v, (str, bytes)) for v in inputs)
    )


def _image_layout(shape: tuple[int, ...]) -> bool | None:
    """Whether an array of ``shape`` is a batch of images (``(B, H, W)``, ``(B, H, W, C)``,
    ``(B, C, H, W)``); None when it is not."""
    if len(shape) == 3:
        side = shape[1:]
        return None if min(side) < _MIN_SIDE or max(side) > 4 * min(side) else False
    if len(shape) != 4:
        return None
    if shape[-1] in _IMAGE_CHANNELS and min(shape[1:3]) >= _MIN_SIDE:
        return False
    if shape[1] in _IMAGE_CHANNELS and min(shape[2:]) >= _MIN_SIDE:
        return True
    return None


def auto_input_view(inputs: Any) -> tuple[Callable[[Any], np.ndarray] | None, str]:
    """The input view for a batch of ``inputs``, and why (None when none fits).

    - images: a numeric array ``(B, H, W)``, ``(B, H, W, C)`` or ``(B, C, H, W)`` with C in
      1, 3, 4 and sides of at least 8 pixels, or a list of PIL images ->
      ``AlignedImageView()`` (analysed as 8x8 standardised thumbnails plus the aligned view
      that re-scores candidate pairs over small shifts and scales);
    - texts: a list or 1-D array of strings -> ``TextView()`` (character 4-grams of the
      case-, punctuation- and markup-normalised text);
    - anything else (token ids, tabular rows, several inputs): no input view.
    """
    inputs = _as_numpy(inputs)
    if _is_text(inputs):
        return TextView(), "texts -> TextView() (character 4-grams of the normalised text)"
    if (
        isinstance(inputs, (list, tuple))
        and inputs
        and all(hasattr(v, "mode") and hasattr(v, "convert") for v in inputs)
    ):
        return AlignedImageView(), f"PIL images -> AlignedImageView() ({_ALIGNED})"
    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "biuf":
        layout = _image_layout(inputs.shape)
        if layout is not None:
            return (
                AlignedImageView(channels_first=layout),
                f"images {tuple(inputs.shape[1:])} -> AlignedImageView() ({_ALIGNED})",
            )
        return None, (
            f"inputs of shape {tuple(inputs.shape[1:])} are neither images nor texts, so "
            "there is no input view (pass input_view= a callable to add one)"
        )
    return None, (
        f"inputs of type {type(inputs).__name__} are neither an image array nor texts, so "
        "there is no input view (pass input_view= a callable to add one)"
    )


class InputView:
    """The input view(s) of one integration run: resolved on the first batch, then applied.

    ``rows(inputs)`` returns ``{"input": (B, d) float32 rows}``, or None when there is no
    input view (``input_view=None``, or ``"auto"`` found no view for these inputs; ``reason``
    says why). The core turns :class:`~neardup.views.AlignedImageView` rows of colour images
    into ``"input"``, ``"input-luma"``, ``"input-ycbcr"`` and ``"input:aligned"``.
    """

    def __init__(self, input_view: Any) -> None:
        self.option = check_input_view(input_view)
        self.view: Callable[[Any], Any] | None = None if self.option == "auto" else self.option
        self.resolved = self.option != "auto"
        self.reason = "input_view=None" if self.option is None else "given by input_view="

    @property
    def active(self) -> bool:
        """Whether rows are collected (False until an ``"auto"`` view is resolved)."""
        return self.view is not None or not self.resolved

    @property
    def names(self) -> list[str]:
        """The input views' names (empty without an input view or before it is resolved)."""
        if self.view is None:
            return []
        return [INPUT_VIEW]

    def rows(self, inputs: Any) -> dict[str, np.ndarray] | None:
        if not self.resolved:
            self.view, self.reason = auto_input_view(inputs)
            self.resolved = True
        if self.view is None:
            return None
        if self.option == "auto" or isinstance(self.view, (ImageView, AlignedImageView, TextView)):
            inputs = _as_numpy(inputs)
        return {INPUT_VIEW: _checked_rows(self.view(inputs))}


def _checked_rows(rows: Any) -> np.ndarray:
    """A view's output as contiguous ``(B, d)`` float32 rows (or a clear error); a
    ``TextView``'s :class:`~neardup.views.TextRows` keep their texts (the word check)."""
    texts = rows.texts if isinstance(rows, TextRows) else None
    ngram = rows.ngram if isinstance(rows, TextRows) else None
    markup = rows.markup if isinstance(rows, TextRows) else None
    grouped = rows.grouped if isinstance(rows, TextRows) else None
    rows = np.asarray(_as_numpy(rows))
    if rows.ndim < 1 or rows.dtype.kind not in "biuf":
        raise NeardupInputError(
            f"input_view returned {rows.dtype} values of shape {rows.shape}; it must "
            "return a numeric (batch, features) array."
        )
    flat = np.ascontiguousarray(rows.reshape(len(rows), -1), dtype=np.float32)
    return flat if texts is None else as_text_rows(flat, texts, ngram, markup, grouped)


def first_rows(rows: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` of a batch's input rows, keeping the texts of
    :class:`~neardup.views.TextRows` (a plain slice drops them)."""
    if isinstance(rows, TextRows) and rows.texts is not None:
        markup = None if rows.markup is None else rows.markup[:n]
        grouped = None if rows.grouped is None else rows.grouped[:n]
        return as_text_rows(rows[:n], rows.texts[:n], rows.ngram, markup, grouped)
    return rows[:n]


def input_view_rows(values: np.ndarray, view: Any) -> Any:
    """The collected rows of the input view as :func:`neardup.find_duplicates` takes them:
    :class:`neardup.views.ImageRows` (thumbnails that know their shape, so the aligned view is
    analysed too) for an :class:`neardup.views.AlignedImageView`, else ``values`` as they are.
    """
    if isinstance(view, AlignedImageView):
        return as_image_rows(values)
    return values


def check_view_names(layers: Sequence[str], input_view: Any) -> None:
    """With an input view, no layer may be named like it (:data:`INPUT_VIEW`,
    :data:`INPUT_LUMA_VIEW`, :data:`INPUT_YCBCR_VIEW`)."""
    for name in (INPUT_VIEW, INPUT_LUMA_VIEW, INPUT_YCBCR_VIEW):
        if input_view is not None and name in layers:
            raise NeardupInputError(
                f"a layer is named {name!r}, which is an input view's name; pass "
                "input_view=None, or analyse a layer with another name."
            )


def check_combine_view(combine: str | None, layers: Sequence[str] | None, input_view: Any) -> None:
    """Refuse, before any training, a ``combine="confirm:<view>"`` that names a view the
    callback will not collect: the input view with ``input_view=None``, or a layer outside
    ``layers`` (``None``: chosen later, so only the input view's names are checked)."""
    if not isinstance(combine, str) or not combine.startswith("confirm:"):
        return
    view = combine.split(":", 1)[1]
    inputs = [INPUT_VIEW, INPUT_LUMA_VIEW, INPUT_YCBCR_VIEW]
    if view in inputs and input_view is None:
        raise NeardupInputError(
            f"combine={combine!r} needs the input view, which input_view=None turns off; "
            "pass an input_view, or combine='any'."
        )
    known = list(layers or []) + (inputs if input_view is not None else [])
    if layers is not None and view not in known:
        raise NeardupInputError(
            f"combine={combine!r} names view {view!r}, which is not analysed "
            f"({closest_names(view, known)}); name a layer or 'input', or pass combine='any'."
        )


def analyze_views(
    rows: Mapping[tuple[str, str], tuple[Any, Any, Any]],
    views: Sequence[str],
    *,
    input_view: Any = None,
    **options: Any,
) -> DuplicatesResult:
    """The combined verdict of several views of the same samples.

    Parameters
    ----------
    rows:
        ``(split, view) -> (values (n_split, d_view), ids (n_split,) or None, labels or None)``;
        every view of a split must hold the same samples in the same order (same ids).
    views:
        The views to analyse, in order (layer names and :data:`INPUT_VIEW`).
    input_view:
        The view that made the :data:`INPUT_VIEW` rows (an :class:`InputView`'s ``view``):
        the rows of an :class:`neardup.views.AlignedImageView` are analysed with their
        aligned view (``"input:aligned"``). With a :class:`neardup.views.TextView` or an
        :class:`neardup.views.AlignedImageView` beside model layers, ``combine`` defaults to
        ``"confirm:input"``, as in the ``datasets`` hook: a pair a layer finds must also be
        close in the text's characters and pass the word check (a text model's layers put
        paraphrases and templated sentences close), or lie within
        ``IMAGE_CONFIRM_WITHIN`` thresholds of one of the image's pixel views (a trained
        model's pooled features put look-alikes of a class close).
    **options:
        Options of :func:`neardup.find_duplicates` (threshold, normalize, reduce, k, backend,
        reference, seed, combine, ...).

    Returns
    -------
    DuplicatesResult
        The combined verdict; ``result.views[view]`` is each view's own result.
    """
    if not rows:
        raise NeardupInputError(
            "no activations to analyse: nothing was collected (did the evaluation run, and do "
            "the layer names match?)."
        )
    views = list(views)
    confirms = isinstance(input_view, (TextView, AlignedImageView))
    if confirms and len(views) > 1 and INPUT_VIEW in views:
        options.setdefault("combine", f"confirm:{INPUT_VIEW}")
    splits = list(dict.fromkeys(s for s, _ in rows))
    data: dict[str, dict[str, Any]] = {s: {} for s in splits}
    ids: dict[str, Any] = {}
    labels: dict[str, Any] = {}
    for split in splits:
        for view in views:
            if (split, view) not in rows:
                raise NeardupInputError(
                    f"view {view!r} has no rows for split {split!r}; every split must be "
                    "collected for every layer and the input view."
                )
            values, view_ids, view_labels = rows[split, view]
            first = ids.get(split)
            if view == views[0]:
                ids[split], labels[split] = view_ids, view_labels
            elif (first is None) != (view_ids is None) or (
                first is not None and not np.array_equal(np.asarray(first), np.asarray(view_ids))
            ):
                raise NeardupInputError(
                    f"split {split!r}: view {view!r} holds other samples than view "
                    f"{views[0]!r} (their ids differ); every view must see the same batches."
                )
            if view == INPUT_VIEW:
                values = input_view_rows(values, input_view)
            data[split][view] = values
    ids = {s: v for s, v in ids.items() if v is not None}
    labels = {s: v for s, v in labels.items() if v is not None}
    return find_duplicates(data, ids=ids or None, labels=labels or None, **options)
