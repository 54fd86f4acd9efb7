"""``ImageView``: a standardised thumbnail per image (box-filter resize, mean/contrast removed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import NeardupInputError

__all__ = ["ImageView"]

_CHANNELS = (1, 3, 4)
_CHUNK_BYTES = 64 << 20
#: half-width of an aligned thumbnail's window, in standard deviations of the content
_REACH = 2.0
#: Rec. 601 luma weights of R, G, B (the Y that JPEG keeps at full resolution)
_LUMA = np.array([0.299, 0.587, 0.114])
#: Rec. 601 (JPEG) R, G, B -> Y, Cb, Cr (offsets left out: the thumbnails are standardised)
_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_COLOR_OPTIONS = (True, False, "auto", "luma", "ycbcr")
#: standard deviation, in chroma cells, of the Gaussian blur of the YCbCr view's chroma before
#: its box filter (benchmarks/README.md, "Faint colour pictures", change 7)
_CHROMA_BLUR = 0.2


def _area_weights(source: int, target: int) -> np.ndarray:
    """``(target, source)`` box-filter weights: each output cell averages the input it covers."""
    edges = np.linspace(0.0, source, target + 1)
    starts, stops = edges[:-1], edges[1:]
    pixel = np.arange(source)
    overlap = np.clip(
        np.minimum(stops[:, None], pixel[None, :] + 1)
        - np.maximum(starts[:, None], pixel[None, :]),
        0.0,
        None,
    )
    return overlap / overlap.sum(axis=1, keepdims=True)


def _window_weights(source: int, lo: np.ndarray, hi: np.ndarray, target: int) -> np.ndarray:
    """``(n, target, source)`` box weights over per-image windows ``[lo, hi)`` (pixel units).

    Parts of a window outside the image repeat its edge pixels.
    """
    edges = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, target + 1)[None, :]
    first = int(np.floor(edges.min()))
    last = int(np.ceil(edges.max()))
    pixel = np.arange(first, max(last, first + 1))
    starts, stops = edges[:, :-1, None], edges[:, 1:, None]
    overlap = np.clip(np.minimum(stops, pixel + 1) - np.maximum(starts, pixel), 0.0, None)
    clamp = np.zeros((len(pixel), source))
    clamp[np.arange(len(pixel)), np.clip(pixel, 0, source - 1)] = 1.0
    weights = overlap @ clamp
    return weights / np.maximum(weights.sum(axis=2, keepdims=True), 1e-12)


def _content_windows(grey: np.ndarray, reach: float) -> tuple[np.ndarray, ...]:
    """Per image of ``grey`` ``(n, H, W)``: a square window around its intensity centroid.

    Weights are each image's intensities above its minimum (unchanged by brightness and
    contrast changes); the window spans ``reach`` standard deviations of the weighted pixel
    positions each way, so it moves and scales with the content (shifts and crops).
    """
    n, height, width = grey.shape
    weights = grey - grey.reshape(n, -1).min(axis=1)[:, None, None]
    total = weights.sum(axis=(1, 2))
    flat = total <= 0
    weights[flat] = 1.0
    total[flat] = height * width
    ys = np.arange(height) + 0.5
    xs = np.arange(width) + 0.5
    wy = weights.sum(axis=2) / total[:, None]
    wx = weights.sum(axis=1) / total[:, None]
    cy, cx = wy @ ys, wx @ xs
    var = (wy @ ys**2 - cy**2 + wx @ xs**2 - cx**2) / 2.0
    half = reach * np.sqrt(np.maximum(var, 0.25))
    return cy - half, cy + half, cx - half, cx + half


def _as_array(image: Any) -> np.ndarray:
    """One image (numpy, PIL, torch or TF tensor) as a numeric numpy array, no framework import."""
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # torch
        image = image.detach().cpu().numpy()
    elif hasattr(image, "mode") and hasattr(image, "convert"):  # PIL
        if image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.mode else "RGB")
        image = np.asarray(image)
    elif not isinstance(image, np.ndarray) and callable(getattr(image, "numpy", None)):  # tf
        image = image.numpy()
    return np.asarray(image)


def _channels_last(batch: np.ndarray, channels_first: bool | None) -> np.ndarray:
    """``(N, H, W)`` / ``(N, H, W, C)`` / ``(N, C, H, W)`` -> ``(N, H, W, C)``."""
    if batch.ndim == 3:
        return batch[..., None]
    if batch.ndim != 4:
        raise NeardupInputError(
            f"ImageView needs images shaped (N, H, W), (N, H, W, C) or (N, C, H, W), got an "
            f"array of shape {batch.shape}; flattened images must be reshaped first, e.g. "
            "x.reshape(-1, 28, 28)."
        )
    if channels_first is None:
        channels_first = batch.shape[-1] not in _CHANNELS and batch.shape[1] in _CHANNELS
    if channels_first:
        batch = np.moveaxis(batch, 1, -1)
    if batch.shape[-1] not in _CHANNELS:
        raise NeardupInputError(
            f"ImageView: images of shape {batch.shape[1:]} have {batch.shape[-1]} channels; "
            "expected 1 (grey), 3 (RGB) or 4 (RGBA), channels last or, with "
            "channels_first=True, first."
        )
    return batch


@dataclass(frozen=True)
class ImageView:
    """A standardised ``size x size`` thumbnail of each image, as one float32 row.

    Each image is box-filtered down to ``size x size`` (any input size; images of different
    sizes can be mixed), alpha dropped, then standardised: its mean is subtracted and it is
    divided by its standard deviation (over all its pixels and channels; a colour thumbnail's
    colour cast is first scaled by ``color_cast``). Brightness and
    contrast changes, re-encodings, noise and small shifts or crops then move a copy very
    little, while different images stay apart. Grey images give ``size * size`` values, colour
    images ``3 * size * size`` (a grey image in a colour set is repeated over 3 channels).

    Parameters
    ----------
    size:
        Thumbnail side in pixels. 8 was the best of 4, 8 and 16 on the measurements in
        benchmarks/README.md ("The views and `Auto` in detail").
    color:
        ``True`` keeps 3 colour channels, ``False`` averages them to grey, ``"luma"`` keeps
        their Rec. 601 luma only (the brightness JPEG preserves; unchanged by colour jitter
        and chroma damage), ``"ycbcr"`` keeps luma at ``size x size`` and the two chroma
        channels at half that side (the resolution JPEG keeps them at: it stores chroma
        subsampled and coarsely quantised, so fine chroma detail is what a re-encode damages;
        the chroma is blurred by a Gaussian of 0.2 chroma cells first, so that the detail
        JPEG drops does not reach the cells through the box filter's edges; each chroma cell
        weighs as much as one luma cell), ``"auto"`` (default) keeps colour
        when any image of the call has 3+ channels. :meth:`views` gives colour, luma and
        YCbCr rows as three views.
    channels_first:
        ``None`` guesses the layout (channels last unless only the first axis can be
        channels); ``True``/``False`` forces it.
    align:
        Centre the thumbnail on the image's intensity centroid (not the default: it brings
        shifted copies closer but noisy ones further).
    color_cast:
        Weight, in ``[0, 1]``, of each colour thumbnail's colour cast (its per-channel means
        minus their average) against its structure. 1 keeps the cast whole; 0.25 (default)
        keeps a quarter: a whole cast dominates low-contrast images, so that different
        objects painted in similar colours collapse together (measured on colourised
        Fashion-MNIST and digits, benchmarks/README.md), while a little of it still
        helps find noisy and re-encoded copies. :meth:`views` also caps the colour
        thumbnail's cast at its structure.

    Call it on a batch: ``ImageView()(images) -> (N, d) float32``, or ``view.views(images)``
    for the recommended set of views (``{"image8": ..., "image8-luma": ...,
    "image8-ycbcr": ...}`` for colour images). ``images`` is an array ``(N, H, W)``,
    ``(N, H, W, C)`` or ``(N, C, H, W)`` (C in 1, 3, 4; uint8, int, bool or float, any range),
    or a sequence of single images (numpy, PIL, torch or TF tensors).
    A constant image gives a row of zeros (all constant images are exact duplicates).
    """

    size: int = 8
    color: bool | str = "auto"
    channels_first: bool | None = None
    align: bool = False
    color_cast: float = 0.25

    def __post_init__(self) -> None:
        if (
            isinstance(self.size, bool)
            or not isinstance(self.size, (int, np.integer))
            or not (1 <= self.size <= 256)
        ):
            raise NeardupInputError(
                f"ImageView size must be an int in [1, 256], got {self.size!r}."
            )
        if isinstance(self.color, np.ndarray) or self.color not in _COLOR_OPTIONS:
            raise NeardupInputError(
                f"ImageView color must be True, False, 'auto', 'luma' or 'ycbcr', got "
                f"{self.color!r}."
            )
        if self.align and self.color == "ycbcr":
            raise NeardupInputError(
                "ImageView align=True works with color True, False, 'auto' or 'luma', not "
                "'ycbcr'; use align=False for the YCbCr view."
            )
        if not isinstance(self.color, str):
            object.__setattr__(self, "color", bool(self.color))
        if (
            isinstance(self.color_cast, bool)
            or not isinstance(self.color_cast, (int, float, np.integer, np.floating))
            or not (0.0 <= float(self.color_cast) <= 1.0)
        ):
            raise NeardupInputError(
                f"ImageView color_cast must be a number in [0, 1], got {self.color_cast!r}."
            )
        if self.channels_first not in (None, True, False):
            raise NeardupInputError(
                f"ImageView channels_first must be None, True or False, got "
                f"{self.channels_first!r}."
            )

    @property
    def name(self) -> str:
        """A short description used as the default view name."""
        return f"image{self.size}"

    def __call__(self, images: Any) -> np.ndarray:
        return self._rows(self._batches(images), self.color)

    def views(self, images: Any) -> dict[str, np.ndarray]:
        """The recommended views of ``images``: ``{name: (N, d) float32 rows}``.

        Colour images (``color=True``, or ``"auto"`` and any image with 3+ channels) give three
        views, the colour thumbnail (:attr:`name`), its luma (``name + "-luma"``) and its
        YCbCr thumbnail with half-resolution chroma (``name + "-ycbcr"``), to be analysed side
        by side (each with its own threshold; "any" combines them): colour separates natural
        neighbours best, luma survives colour jitter and re-colouring, and YCbCr survives
        JPEG's chroma damage on pictures whose contrast is mostly in colour, not brightness
        (measured in benchmarks/README.md, "Colour-view candidates"). The colour thumbnail's
        colour cast (after ``color_cast``) is capped at its structure here: its norm never
        exceeds that of the pixels minus their per-channel means (benchmarks/README.md, "Faint
        colour pictures"; calling the view itself leaves it uncapped: :class:`AlignedImageView`
        rows, from which ``find_duplicates`` derives these three views, keep it for the YCbCr
        chroma). Grey
        images, or another ``color``, give one view, ``{name: view(images)}``.
        """
        batches = self._batches(images)
        color = self.color
        if color == "auto":
            color = any(b.shape[-1] >= 3 for b in batches)
        out = {self.name: self._rows(batches, color)}
        if color is True:
            out[self.name] = _capped_rows(out[self.name], self.size)
            out[f"{self.name}-luma"] = self._rows(batches, "luma")
            out[f"{self.name}-ycbcr"] = self._rows(batches, "ycbcr")
        return out

    def _rows(self, batches: list[np.ndarray], color: bool | str) -> np.ndarray:
        """Standardised rows of channels-last ``batches`` in one colour mode."""
        if color == "auto":
            color = any(b.shape[-1] >= 3 for b in batches)
        out = [self._thumbnails(b, color) for b in batches if len(b)]  # (0, H, W, C): no rows
        if not out:
            return np.zeros((0, self._width(color)), dtype=np.float32)
        return np.concatenate(out) if len(out) > 1 else out[0]

    def _width(self, color: bool | str) -> int:
        """Row length in one colour mode."""
        if color == "ycbcr":
            return self.size * self.size + 2 * _chroma_side(self.size) ** 2
        return (3 if color is True else 1) * self.size * self.size

    def _batches(self, images: Any) -> list[np.ndarray]:
        """The images as channels-last numeric batches (one per run of same-shaped images)."""
        if isinstance(images, (str, bytes)):
            raise NeardupInputError("ImageView takes images, got a string.")
        if isinstance(images, np.ndarray) or hasattr(images, "shape"):
            batch = _as_array(images)
            if batch.dtype != object:
                return [self._checked(_channels_last(batch, self.channels_first))]
            images = list(batch)
        if not isinstance(images, Sequence) and not hasattr(images, "__iter__"):
            raise NeardupInputError(
                f"ImageView takes an array of images or a sequence of images, got "
                f"{type(images).__name__}."
            )
        batches: list[np.ndarray] = []
        run: list[np.ndarray] = []
        for position, image in enumerate(images):
            array = _as_array(image)
            if array.ndim not in (2, 3):
                raise NeardupInputError(
                    f"ImageView: image {position} has shape {array.shape}; expected (H, W), "
                    "(H, W, C) or (C, H, W)."
                )
            if run and run[0].shape != array.shape:
                batches.append(np.stack(run))
                run = []
            run.append(array)
        if run:
            batches.append(np.stack(run))
        return [self._checked(_channels_last(b, self.channels_first)) for b in batches]

    @staticmethod
    def _checked(batch: np.ndarray) -> np.ndarray:
        if not (np.issubdtype(batch.dtype, np.number) or batch.dtype == np.bool_):
            raise NeardupInputError(f"ImageView needs numeric images, got dtype {batch.dtype}.")
        if np.issubdtype(batch.dtype, np.complexfloating):
            raise NeardupInputError("ImageView needs real-valued images, got complex values.")
        if np.issubdtype(batch.dtype, np.floating) and not np.isfinite(batch).all():
            bad = int(np.argwhere(~np.isfinite(batch.reshape(len(batch), -1)))[0, 0])
            raise NeardupInputError(
                f"ImageView: image {bad} has NaN or infinite pixels; fix or drop it first."
            )
        if batch.shape[1] < 1 or batch.shape[2] < 1:
            raise NeardupInputError(f"ImageView: empty images of shape {batch.shape[1:]}.")
        return batch

    def _thumbnails(self, batch: np.ndarray, color: bool | str) -> np.ndarray:
        """``(n, H, W, C)`` -> standardised ``(n, size * size * channels)`` float32 rows."""
        n, height, width, channels = batch.shape
        if channels == 4:
            batch, channels = batch[..., :3], 3
        rows_weights = _area_weights(height, self.size)
        cols_weights = _area_weights(width, self.size)
        out_channels = 3 if color is True else 1
        if self.align:
            return self._aligned(batch, color)
        if color == "ycbcr":
            return self._ycbcr(batch)
        out = np.empty((n, self.size, self.size, out_channels), dtype=np.float64)
        # at the image's own size the box filter is the identity (weights exactly 1 and 0):
        # its product gives each pixel plus zeros, which ``+ 0.0`` gives without the product
        same_size = height == width == self.size
        step = max(1, _CHUNK_BYTES // (8 * height * width * channels))
        for start in range(0, n, step):
            chunk = _in_color_mode(batch[start : start + step].astype(np.float64), color)
            out[start : start + len(chunk)] = (
                chunk + 0.0
                if same_size
                else np.einsum("ih,nhwc,jw->nijc", rows_weights, chunk, cols_weights, optimize=True)
            )
        return _standardized(_with_cast(out, float(self.color_cast)))

    def _ycbcr(self, batch: np.ndarray) -> np.ndarray:
        """``(n, H, W, 1 | 3)`` -> ``(n, size**2 + 2 * (size // 2)**2)`` rows: the luma
        thumbnail (mean removed) and both chroma thumbnails at half the side (blurred first,
        :func:`_blur_chroma`; colour cast scaled by ``color_cast``), together scaled to unit
        standard deviation."""
        n, height, width, channels = batch.shape
        side, chroma_side = self.size, _chroma_side(self.size)
        luma = np.empty((n, side, side), dtype=np.float64)
        chroma = np.zeros((n, chroma_side, chroma_side, 2), dtype=np.float64)
        weights = [(_area_weights(height, s), _area_weights(width, s)) for s in (side, chroma_side)]
        step = max(1, _CHUNK_BYTES // (8 * height * width * 3))
        for start in range(0, n, step):
            chunk = batch[start : start + step].astype(np.float64)
            if channels == 1:  # a grey image: luma only, no chroma
                chunk = np.repeat(chunk, 3, axis=-1)
            ycc = chunk @ _YCBCR.T
            _blur_chroma(ycc, height / chroma_side, width / chroma_side)
            (rows_y, cols_y), (rows_c, cols_c) = weights
            luma[start : start + len(chunk)] = np.einsum(
                "ih,nhw,jw->nij", rows_y, ycc[..., 0], cols_y, optimize=True
            )
            chroma[start : start + len(chunk)] = np.einsum(
                "ih,nhwc,jw->nijc", rows_c, ycc[..., 1:], cols_c, optimize=True
            )
        luma = luma.reshape(n, side * side)
        luma -= luma.mean(axis=1, keepdims=True)
        chroma -= (1.0 - float(self.color_cast)) * chroma.mean(axis=(1, 2), keepdims=True)
        # a chroma cell covers (side / chroma_side)**2 luma cells; it weighs as much as one
        return _unit_spread(np.concatenate([luma, chroma.reshape(n, 2 * chroma_side**2)], axis=1))

    def _aligned(self, batch: np.ndarray, color: bool | str) -> np.ndarray:
        n, height, width, channels = batch.shape
        out = np.empty((n, self.size, self.size, 3 if color is True else 1), dtype=np.float64)
        step = max(1, _CHUNK_BYTES // (8 * height * width * channels * 4))
        for start in range(0, n, step):
            chunk = _in_color_mode(batch[start : start + step].astype(np.float64), color)
            y0, y1, x0, x1 = _content_windows(chunk.mean(axis=-1), _REACH)
            rows_weights = _window_weights(height, y0, y1, self.size)
            cols_weights = _window_weights(width, x0, x1, self.size)
            out[start : start + len(chunk)] = np.einsum(
                "nih,nhwc,njw->nijc", rows_weights, chunk, cols_weights, optimize=True
            )
        return _standardized(_with_cast(out, float(self.color_cast)))


def _blur_chroma(ycc: np.ndarray, cell_height: float, cell_width: float) -> None:
    """Blur the two chroma planes of ``ycc`` ``(n, H, W, 3)`` in place by a Gaussian of
    :data:`_CHROMA_BLUR` chroma cells (cells of ``cell_height x cell_width`` pixels).

    JPEG keeps chroma at half resolution and drops its fine detail; a box filter's cells still
    hold some of that detail (a sharp colour edge lands in one cell or the next), so a
    re-encoded copy of a picture that lives in its colours moves among its natural
    neighbours. Blurred first, the cells hold what JPEG keeps. Measured on colourised
    Fashion-MNIST (benchmarks/README.md, "Faint colour pictures", change 7): JPEG recall
    0.88 / 0.96 / 0.94 / 0.96 -> 0.94 / 0.98 / 0.96 / 1.00 on four plantings with 0.2 cells, no
    false alarm; 0.25 cells flag a different boot in the same colours.
    """
    if _CHROMA_BLUR <= 0:
        return
    from scipy.ndimage import gaussian_filter  # imported here: scipy is slow to import

    sigma = (0.0, _CHROMA_BLUR * cell_height, _CHROMA_BLUR * cell_width, 0.0)
    ycc[..., 1:] = gaussian_filter(ycc[..., 1:], sigma, mode="nearest")


def _in_color_mode(chunk: np.ndarray, color: bool | str) -> np.ndarray:
    """``(n, H, W, 1 | 3)`` float pixels -> 3 channels (``True``), grey mean (``False``) or
    Rec. 601 luma (``"luma"``); a grey image is its own luma."""
    channels = chunk.shape[-1]
    if color is True:
        return np.repeat(chunk, 3, axis=-1) if channels == 1 else chunk
    if channels == 1:
        return chunk
    if color == "luma":
        return (chunk @ _LUMA)[..., None]
    return chunk.mean(axis=-1, keepdims=True)


def _with_cast(out: np.ndarray, weight: float) -> np.ndarray:
    """``(n, s, s, c)`` thumbnails with each one's colour cast (per-channel means minus their
    average) scaled by ``weight``, in place; grey thumbnails (``c == 1``) as they are."""
    if out.shape[-1] > 1 and weight != 1.0:
        means = out.mean(axis=(1, 2), keepdims=True)
        out -= (1.0 - weight) * (means - means.mean(axis=3, keepdims=True))
    return out


def _cap_cast(out: np.ndarray) -> np.ndarray:
    """``(n, s, s, c)`` colour thumbnails with each one's colour cast (per-channel means minus
    their average) capped, in place, so that its norm over the thumbnail never exceeds the
    norm of the thumbnail's structure (its pixels minus their per-channel means).

    A faint object in a strong colour (a fore- and background of nearly one brightness and
    hue) otherwise standardises to little but its cast, which any other picture in that
    colour shares: different pictures in similar colours come out as copies. Measured in
    benchmarks/README.md, "Faint colour pictures" (colourised Fashion-MNIST: the colour view's
    false alarms on the no-copy control, 2 / 1 on seeds 0 / 1, gone, every recall unchanged).
    """
    means = out.mean(axis=(1, 2), keepdims=True)  # (n, 1, 1, c)
    cast = means - means.mean(axis=3, keepdims=True)
    structure = np.sqrt(((out - means) ** 2).sum(axis=(1, 2, 3)))  # (n,)
    size = np.sqrt(out.shape[1] * out.shape[2] * (cast**2).sum(axis=(1, 2, 3)))  # (n,)
    keep = np.minimum(1.0, structure / np.maximum(size, 1e-300))
    out -= (1.0 - keep)[:, None, None, None] * cast
    return out


def _capped_rows(rows: np.ndarray, size: int) -> np.ndarray:
    """Colour thumbnail rows ``(N, size * size * 3)`` with each one's colour cast capped at
    its structure (:func:`_cap_cast`), standardised again, as float32."""
    if not len(rows):
        return np.asarray(rows, dtype=np.float32)
    out = np.array(rows, dtype=np.float64).reshape(len(rows), size, size, 3)  # a copy
    return _standardized(_cap_cast(out))


def _chroma_side(size: int) -> int:
    """Side of the chroma thumbnails of the ``"ycbcr"`` mode: half the luma side."""
    return max(1, size // 2)


def _unit_spread(rows: np.ndarray) -> np.ndarray:
    """``(n, d)`` rows divided by their standard deviation (not re-centred), as float32;
    constant rows become zeros."""
    spread = rows.std(axis=1, keepdims=True)
    constant = spread[:, 0] <= 1e-9 * (1.0 + np.abs(rows).max(axis=1))
    rows = rows / np.where(constant[:, None], 1.0, spread)
    rows[constant] = 0.0
    return rows.astype(np.float32)


def _standardized(out: np.ndarray) -> np.ndarray:
    """``(n, s, s, c)`` thumbnails -> rows with mean 0 and standard deviation 1 (float32)."""
    n = len(out)
    flat = out.reshape(n, -1)
    flat -= flat.mean(axis=1, keepdims=True)
    spread = flat.std(axis=1, keepdims=True)
    constant = spread[:, 0] <= 1e-9 * (1.0 + np.abs(out.reshape(n, -1)).max(axis=1))
    flat /= np.where(constant[:, None], 1.0, spread)
    flat[constant] = 0.0
    return flat.astype(np.float32)
