"""Thumbnails for the HTML report: samples (images or text) to inline, self-contained HTML.

Images are encoded as PNG with the standard library alone (zlib + struct), so the core keeps
its numpy/scipy/annoy-only dependencies. Accepted images: HW, HWC or CHW arrays (1, 3 or 4
channels), grayscale or RGB(A), uint8/bool/int or float (``[0, 1]``, ``[-1, 1]``, ``[0, 255]``
or any range, min-max scaled), plus anything numpy can turn into such an array (PIL images,
CPU torch tensors, TF tensors). Strings are shown as escaped text.
"""

from __future__ import annotations

import base64
import html
import math
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .._errors import NeardupInputError, check_split_mapping

__all__ = ["SampleSource", "encode_png", "to_image_array"]

_TEXT_LIMIT = 240  # characters of a text sample shown in the page
_CHANNELS = (1, 3, 4)
_PNG_COLOR_TYPE = {1: 0, 3: 2, 4: 6}  # grayscale, RGB, RGBA


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: np.ndarray) -> bytes:
    """Encode a uint8 ``(H, W)`` or ``(H, W, C)`` array (C in 1, 3, 4) as PNG bytes."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(
            f"encode_png needs a uint8 HW or HWC array, got {image.dtype} {image.shape}"
        )
    if image.ndim == 2:
        image = image[:, :, None]
    height, width, channels = image.shape
    if channels not in _PNG_COLOR_TYPE:
        raise ValueError(f"encode_png: {channels} channels (expected 1, 3 or 4)")
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPE[channels], 0, 0, 0)
    rows = np.ascontiguousarray(image).reshape(height, width * channels)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)  # filter 0 per row
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 9)),
            _png_chunk(b"IEND", b""),
        ]
    )


def _as_numpy(value: Any) -> Any:
    """Framework tensors and PIL images to numpy, without importing any framework."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch
        return value.detach().cpu().numpy()
    if hasattr(value, "mode") and hasattr(value, "convert"):  # PIL
        if value.mode not in ("L", "RGB", "RGBA"):
            value = value.convert("RGBA" if "A" in value.mode else "RGB")
        return np.asarray(value)
    if not isinstance(value, np.ndarray) and callable(getattr(value, "numpy", None)):  # tf
        return value.numpy()
    return value


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale any numeric image to uint8, guessing its range the way plotting libraries do."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    values = array.astype(np.float64)
    values[~np.isfinite(values)] = 0.0
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if np.issubdtype(array.dtype, np.floating) and low >= 0 and high <= 1:
        values = values * 255
    elif np.issubdtype(array.dtype, np.floating) and low >= -1 and high <= 1:
        values = (values + 1) * 127.5
    elif not (low >= 0 and high <= 255):
        values = (values - low) * (255 / (high - low)) if high > low else values * 0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def to_image_array(value: Any, *, max_side: int = 64) -> np.ndarray | None:
    """A uint8 HW/HWC array ready for :func:`encode_png`, or ``None`` if ``value`` is no image.

    Layout: 2-D is HW; 3-D is HWC when the last axis has 1, 3 or 4 entries, else CHW when the
    first does; a leading axis of 1 (a batch of one) is dropped; a 1-D vector of a square
    length of 64 or more (a flattened grayscale image, e.g. 784 = 28x28) is shown as a square.
    Images larger than ``max_side`` are reduced by block averaging (keeps the page small).
    """
    array = np.asarray(_as_numpy(value))
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        return None
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 1:
        side = math.isqrt(array.size)
        if side < 8 or side * side != array.size:
            return None
        array = array.reshape(side, side)
    elif array.ndim == 3:
        if array.shape[-1] not in _CHANNELS and array.shape[0] in _CHANNELS:
            array = np.moveaxis(array, 0, -1)
        if array.shape[-1] not in _CHANNELS:
            return None
        if array.shape[-1] == 1:
            array = array[:, :, 0]
    if array.ndim not in (2, 3) or min(array.shape[:2]) < 1:
        return None
    return _shrink(_to_uint8(array), max_side)


def _shrink(array: np.ndarray, max_side: int) -> np.ndarray:
    """Block-average a uint8 image by an integer factor: longer side at most ``max_side``."""
    factor = math.ceil(max(array.shape[:2]) / max_side)
    if factor <= 1:
        return array
    height, width = (array.shape[0] // factor) * factor, (array.shape[1] // factor) * factor
    if height == 0 or width == 0:  # extremely elongated: subsample instead
        return array[::factor, ::factor]
    cropped = array[:height, :width].astype(np.float64)
    shape = (height // factor, factor, width // factor, factor, *array.shape[2:])
    return np.rint(cropped.reshape(shape).mean(axis=(1, 3))).astype(np.uint8)


def _text_html(text: str) -> str:
    shown = text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT] + "…"
    return f'<div class="text" title="{html.escape(text[:2000])}">{html.escape(shown)}</div>'


class SampleSource:
    """Turns ``(split, position, id)`` into thumbnail HTML, within a byte budget.

    ``samples`` is ``None``, a mapping ``split -> sequence`` indexed by position within the
    split (an image array, a list of images or a list of strings), or a callable
    ``(split, id) -> image or text``. Each sample is encoded at most once; once ``budget``
    bytes of thumbnails have been emitted, the rest show their id only.
    """

    def __init__(
        self,
        samples: Mapping[str, Sequence[Any]] | Callable[[str, Any], Any] | None,
        split_sizes: Mapping[str, int],
        *,
        max_side: int = 64,
        budget: int = 4_000_000,
    ) -> None:
        self.samples = _check_samples(samples, split_sizes)
        self.max_side = max_side
        self.budget = budget
        self.used = 0
        self.skipped = 0
        self._cache: dict[tuple[str, int], str] = {}

    def thumbnail(self, split: str, position: int, sample_id: Any) -> str:
        """HTML for one sample (an ``<img>``, a text block, or an empty string)."""
        key = (split, int(position))
        if key not in self._cache:
            self._cache[key] = self._render(self._fetch(split, int(position), sample_id))
        snippet = self._cache[key]
        if not snippet:
            return ""
        if self.used + len(snippet) > self.budget:
            self.skipped += 1
            return '<div class="nothumb">(thumbnail budget reached)</div>'
        self.used += len(snippet)
        return snippet

    def _fetch(self, split: str, position: int, sample_id: Any) -> Any:
        if self.samples is None:
            return None
        if callable(self.samples):
            try:
                return self.samples(split, sample_id)
            except Exception as err:
                raise NeardupInputError(
                    f"samples({split!r}, {sample_id!r}) raised {type(err).__name__}: {err}; "
                    "the callable gets a split name and a sample id of the result."
                ) from err
        seq = self.samples.get(split)
        return None if seq is None else seq[position]

    def _render(self, value: Any) -> str:
        if isinstance(value, tuple) and value:
            value = value[0]  # a dataset item (input, target, ...): show the input
        elif isinstance(value, Mapping):  # a dataset row: its first non-scalar column
            value = next((v for v in value.values() if not isinstance(v, (bool, int, float))), None)
        if value is None:
            return ""
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if isinstance(value, str):
            return _text_html(value)
        image = to_image_array(value, max_side=self.max_side)
        if image is None:
            shape = getattr(value, "shape", None)
            what = f"array {tuple(shape)}" if shape is not None else type(value).__name__
            return _text_html(f"[cannot show {what}]")
        data = base64.b64encode(encode_png(image)).decode("ascii")
        height, width = image.shape[:2]
        return (
            f'<img class="thumb" alt="" width="{width}" height="{height}" '
            f'style="aspect-ratio:{width}/{height}" src="data:image/png;base64,{data}">'
        )


def _check_samples(samples: Any, split_sizes: Mapping[str, int]) -> Any:
    """Validate the ``samples`` argument against the result's splits and sizes."""
    if samples is None or (callable(samples) and not isinstance(samples, Mapping)):
        return samples
    check_split_mapping(
        samples,
        "samples",
        split_sizes,
        "samples={'data': images}, or a callable (split, id) -> sample",
    )
    for split, seq in samples.items():
        try:
            n = len(seq)
        except TypeError as err:
            raise NeardupInputError(
                f"samples[{split!r}] has no length ({type(seq).__name__}); pass a sequence "
                "indexed by position within the split, or a callable (split, id) -> sample."
            ) from err
        if n != split_sizes[split]:
            raise NeardupInputError(
                f"samples[{split!r}] has {n} items but split {split!r} has "
                f"{split_sizes[split]} samples; pass the whole split, in the order it was "
                "analysed."
            )
    return samples
