"""``AlignedImageView``: thumbnails that also let each candidate pair be re-aligned.

A fixed-grid thumbnail (:class:`ImageView`) misses 1-2 pixel shifts and 90 % crops: they move
every pixel. ``AlignedImageView`` returns :class:`ImageRows`, a float32 ``(N, R*R*C)`` array of
standardised ``R x R`` thumbnails (``R`` the image side, kept between 16 and 32) that knows its
shape. :func:`neardup.find_duplicates` then analyses it as two views:

- ``<view>``: the usual 8x8 standardised thumbnail (exact copies, noise, brightness, re-encodes);
- ``<view>:aligned``: for each evaluation row, its nearest reference rows in three cheap,
  shift-tolerant views (:func:`candidate_features`: two 8x8 thumbnails of a window that follows
  the content, low-frequency Fourier magnitudes) and in four crop searches
  (:func:`crop_candidate_features`, both ways in two views) are re-scored by
  :func:`aligned_distances` (best correlation of the grey thumbnails over small shifts and
  scales), and the ``Auto`` threshold is read from those aligned distances.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import NeardupInputError
from ._image import ImageView

__all__ = [
    "CROP_SCALE",
    "AlignedImageView",
    "ImageRows",
    "as_image_rows",
    "candidate_features",
    "color_candidate_features",
    "crop_candidate_features",
    "search_features",
]

_MIN_SIDE = 16
_MAX_SIDE = 32
_FOURIER = 6  # low frequencies kept per axis by the Fourier-magnitude candidate view
_CHUNK = 1024  # images whose candidate features are made at a time
#: the centred window of :func:`crop_candidate_features` (a 90 % crop resized back)
CROP_SCALE = 0.9


class ImageRows(np.ndarray):
    """``(N, side * side * channels)`` float32 thumbnails that remember ``side`` and ``channels``.

    Made by :class:`AlignedImageView` (or :func:`as_image_rows` from plain rows collected
    batch by batch). Slicing keeps the shape; ``np.concatenate`` returns a plain array (wrap
    it again with :func:`as_image_rows`).
    """

    side: int
    channels: int

    def __array_finalize__(self, obj: Any) -> None:
        self.side = getattr(obj, "side", 0)
        self.channels = getattr(obj, "channels", 0)

    def images(self) -> np.ndarray:
        """The thumbnails as ``(N, side, side, channels)`` float32."""
        return np.asarray(self, dtype=np.float32).reshape(
            len(self), self.side, self.side, self.channels
        )


def as_image_rows(values: Any, side: int | None = None, channels: int | None = None) -> ImageRows:
    """Plain ``(N, side * side * channels)`` rows as :class:`ImageRows`.

    ``side`` and ``channels`` default to those of ``values`` when it is :class:`ImageRows`,
    else are read from the width ``d``: ``side * side`` (grey) or ``3 * side * side`` (colour;
    no integer width is both).
    """
    array = np.ascontiguousarray(values, dtype=np.float32)
    if side is None or channels is None:
        side, channels = _shape_of(values, array)
    if array.ndim != 2 or array.shape[1] != side * side * channels:
        raise NeardupInputError(
            f"aligned image rows must have shape (N, {side * side * channels}) for "
            f"{side}x{side} thumbnails with {channels} channel(s), got {array.shape}."
        )
    rows = array.view(ImageRows)
    rows.side, rows.channels = int(side), int(channels)
    return rows


def _shape_of(values: Any, array: np.ndarray) -> tuple[int, int]:
    if isinstance(values, ImageRows) and values.side:
        return values.side, values.channels
    width = array.shape[-1] if array.ndim == 2 else 0
    for channels in (1, 3):
        side = round(float(np.sqrt(width / channels)))
        if width and side * side * channels == width:
            return side, channels
    raise NeardupInputError(
        f"aligned image rows must be (N, side * side) or (N, 3 * side * side) thumbnails, got "
        f"shape {array.shape}."
    )


@dataclass(frozen=True)
class AlignedImageView:
    """Standardised thumbnails at (near) full resolution, re-aligned pair by pair.

    Parameters
    ----------
    side:
        Thumbnail side ``R``. ``None`` (default): each call's largest image side clipped to
        [16, 32] (28x28 images stay at 28, so a 1-pixel shift is a whole-pixel shift); a
        side ``s`` below 16 is blown up to the smallest multiple of ``s`` from 16 on (8: 16,
        12: 24), each pixel repeated over whole thumbnail pixels, so the aligned view can take
        the thumbnails back to their source pixels and search shifts in them.
    color, channels_first:
        As :class:`ImageView`.

    Call it on a batch: ``AlignedImageView()(images) -> ImageRows`` ``(N, R * R * C)``
    float32 (``4 * R * R * C`` bytes per image: 3,136 for a 28x28 grey image). Pass it to
    :func:`neardup.find_duplicates` as a view (or as the data); it is analysed as the 8x8
    thumbnail view plus the aligned view ``"<name>:aligned"``.
    """

    side: int | None = None
    color: bool | str = "auto"
    channels_first: bool | None = None

    def __post_init__(self) -> None:
        if self.side is not None and (
            isinstance(self.side, bool)
            or not isinstance(self.side, (int, np.integer))
            or not (_MIN_SIDE <= self.side <= 128)
        ):
            raise NeardupInputError(
                f"AlignedImageView side must be None or an int in [{_MIN_SIDE}, 128], got "
                f"{self.side!r}."
            )
        ImageView(color=self.color, channels_first=self.channels_first)  # validates both

    @property
    def name(self) -> str:
        """A short description used as the default view name."""
        return "image"

    def side_for(self, images: Any) -> int:
        """The thumbnail side used for ``images``."""
        if self.side is not None:
            return int(self.side)
        shape = np.shape(images) if hasattr(images, "shape") else np.shape(images[0])
        spatial = _spatial_sides(shape, self.channels_first)
        largest = max(spatial)
        if 0 < largest < _MIN_SIDE:  # a whole number of thumbnail pixels per source pixel
            return int(largest * -(-_MIN_SIDE // largest))
        return int(np.clip(largest, _MIN_SIDE, _MAX_SIDE))

    def __call__(self, images: Any) -> ImageRows:
        side = self.side_for(images) if _has_items(images) else _MIN_SIDE
        view = ImageView(size=side, color=self.color, channels_first=self.channels_first)
        rows = view(images)
        channels = rows.shape[1] // (side * side) if rows.shape[1] else 1
        return as_image_rows(rows, side, channels)


def _has_items(images: Any) -> bool:
    try:
        return len(images) > 0
    except TypeError:
        return True


def _spatial_sides(shape: tuple[int, ...], channels_first: bool | None) -> tuple[int, int]:
    """``(H, W)`` of a batch or single image shape (as :class:`ImageView` reads layouts)."""
    dims = tuple(int(s) for s in shape)
    if len(dims) in (2, 3) and (len(dims) == 2 or dims[-1] in (1, 3, 4) or dims[0] in (1, 3, 4)):
        if len(dims) == 2:
            return dims[0], dims[1]
        image = dims
    else:
        image = dims[1:] if len(dims) >= 3 else dims
    if len(image) == 2:
        return image[0], image[1]
    if channels_first or (channels_first is None and image[-1] not in (1, 3, 4)):
        return image[1], image[2]
    return image[0], image[1]


def _centred_thumbnails(
    images: np.ndarray, *, reach: float, power: float, size: int = 8
) -> np.ndarray:
    """``(N, size * size)`` grey thumbnails of a square window around each image's content.

    Weights are the grey intensities above the image's minimum raised to ``power``; the
    window is centred on their centroid and spans ``reach`` weighted standard deviations each
    way, so it follows the content when it is shifted or cropped. The window is sampled
    bilinearly at ``2 * size`` points per axis, then averaged 2x2.
    """
    n, side = images.shape[:2]
    grey = images.mean(axis=-1).astype(np.float64)
    grey -= grey.reshape(n, -1).min(axis=1)[:, None, None]
    grey **= power
    total = grey.sum(axis=(1, 2))
    flat = total <= 0
    grey[flat] = 1.0
    total[flat] = side * side
    pos = np.arange(side, dtype=np.float64)
    wy = grey.sum(axis=2) / total[:, None]
    wx = grey.sum(axis=1) / total[:, None]
    cy, cx = wy @ pos, wx @ pos
    var = (wy @ pos**2 - cy**2 + wx @ pos**2 - cx**2) / 2.0
    half = reach * np.sqrt(np.maximum(var, 0.25))
    steps = (np.arange(2 * size) + 0.5) / (2 * size) * 2.0 - 1.0  # in (-1, 1)
    ys = np.clip(cy[:, None] + half[:, None] * steps, 0, side - 1)
    xs = np.clip(cx[:, None] + half[:, None] * steps, 0, side - 1)
    sampled = _bilinear(grey, ys, xs)
    pooled = sampled.reshape(n, size, 2, size, 2).mean(axis=(2, 4))
    return pooled.reshape(n, -1)


def _bilinear(grey: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``grey`` ``(N, H, W)`` sampled at the grid ``ys`` x ``xs`` (``(N, m)`` each, inside the
    image): rows first, then columns, each a weighted sum of two gathered neighbours.

    Returns the ``(N, m_y, m_x)`` samples as the transposed view of a C-ordered
    ``(N, m_x, m_y)`` array (the column pass writes them that way)."""
    rows = _interpolated(grey, *_neighbours(ys, grey.shape[1]))
    columns = np.ascontiguousarray(rows.transpose(0, 2, 1))  # (N, W, m_y)
    sampled = _interpolated(columns, *_neighbours(xs, grey.shape[2]))
    return sampled.transpose(0, 2, 1)  # (N, m_y, m_x)


def _interpolated(x: np.ndarray, low: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """``(N, m, W)``: rows ``low`` and ``low + 1`` of ``x`` ``(N, H, W)`` weighted ``1 - frac``
    and ``frac`` (``(N, m)`` each)."""
    out = _gather_rows(x, low)
    out *= (1.0 - frac)[..., None]
    upper = _gather_rows(x, low + 1)
    upper *= frac[..., None]
    out += upper
    return out


def _gather_rows(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``(N, m, W)``: ``out[n, k] = x[n, index[n, k]]`` of ``x`` ``(N, H, W)``, ``index``
    ``(N, m)`` (whole rows copied from one flat array: faster than advanced indexing)."""
    n, height = x.shape[:2]
    flat = np.ascontiguousarray(x).reshape(n * height, -1)
    return np.take(flat, index + (np.arange(n) * height)[:, None], axis=0)


def _neighbours(points: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower neighbour index and interpolation weight of ``points`` ``(N, m)`` in ``[0,
    length - 1]`` (the last point reads the last two samples with weight 1 on the upper)."""
    low = np.minimum(np.floor(points).astype(np.int64), length - 2)
    return low, points - low


def candidate_features(images: np.ndarray) -> list[np.ndarray]:
    """Shift-tolerant views of ``(N, R, R, C)`` thumbnails for finding candidate pairs.

    Returns ``(N, d)`` float32 arrays, each row centred and of unit length: two 8x8 thumbnails
    of a window that follows the content (:func:`_centred_thumbnails`; a tight window on
    squared intensities and a wider one on plain intensities), and the log magnitudes of the
    lowest Fourier frequencies of the grey image (unchanged by circular shifts). Measured on
    Fashion-MNIST (``benchmarks/bench_quality.py``), each finds shifted or cropped copies
    among its 10 nearest rows where the others miss them.
    """
    return _by_chunk(_candidate_chunk, images)


def _candidate_chunk(images: np.ndarray) -> list[np.ndarray]:
    """:func:`candidate_features` of a few images."""
    return [
        _unit(_centred_thumbnails(images, reach=1.5, power=2.0)),
        _wide_thumbnails(images),
        _fourier(images.mean(axis=-1)),
    ]


def color_candidate_features(images: np.ndarray, size: int = 8) -> np.ndarray:
    """``(N, size * size * C)`` float32 unit rows: colour thumbnails for finding candidates.

    ``images`` are ``(N, R, R, C)`` colour thumbnails of :class:`AlignedImageView` (whose
    colour cast already carries ``ImageView.color_cast``); each is box-filtered to ``size x
    size`` (:class:`ImageView` with the cast kept as it is), centred and scaled to unit
    length. The candidate views of :func:`candidate_features` see one grey projection of
    each image; colours still tell a shifted or cropped copy's source from the many grey
    look-alikes of a large set (benchmarks/README.md, "Round 12").
    """
    view = ImageView(size=size, color=True, channels_first=False, color_cast=1.0)
    return _by_chunk(lambda chunk: [_unit(view(np.asarray(chunk, np.float32)))], images)[0]


def _by_chunk(features: Callable[[np.ndarray], list[Any]], images: np.ndarray) -> list[Any]:
    """``features(images)`` made :data:`_CHUNK` images at a time (each image's features are
    its own, so the result is the same; the float64 buffers stay small and in cache) and
    joined: a list of arrays, or of tuples of arrays."""
    parts = [features(images[s : s + _CHUNK]) for s in range(0, max(len(images), 1), _CHUNK)]
    if len(parts) == 1:
        return parts[0]
    return [_joined([part[k] for part in parts]) for k in range(len(parts[0]))]


def _joined(parts: list[Any]) -> Any:
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(column) for column in zip(*parts))
    return np.concatenate(parts)


def crop_candidate_features(
    images: np.ndarray, scale: float = CROP_SCALE
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Views of ``(N, R, R, C)`` thumbnails and of their zoomed-in centres, for finding crops.

    Returns ``(plain, zoomed)`` pairs of ``(N, d)`` float32 unit rows: the Fourier magnitudes
    and the wider content-following 8x8 thumbnail of :func:`candidate_features`, ``plain`` of
    each image and ``zoomed`` of its central ``scale`` window resized back to ``R x R``
    (bilinear), i.e. of a centred crop. A crop taken anywhere near the centre is that centred
    crop shifted by a pixel or two, which both views nearly ignore, so a crop's ``plain`` row
    lies near its source's ``zoomed`` row. Measured on the 90 % crops of
    ``benchmarks/bench_quality.py`` (grey and colourised Fashion-MNIST, seeds 0 and 1, exact
    ranks): the source among a crop's 10 nearest zoomed Fourier rows for 80-98 % of crops,
    among its 10 nearest plain rows for 10-46 %; with crop searches of 5 rows the source is a
    candidate of the aligned view for 96-100 % (grey) and 92-98 % (colourised) of crops,
    against 72-90 % without.
    """
    return _by_chunk(lambda chunk: _crop_chunk(chunk, scale), images)


def search_features(
    images: np.ndarray, scale: float = CROP_SCALE
) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """``(candidate_features(images), crop_candidate_features(images, scale))`` made together:
    the wider content-following thumbnail, in both, is made once.

    Parameters
    ----------
    images:
        ``(N, R, R, C)`` thumbnails.
    scale:
        As :func:`crop_candidate_features`.

    Returns
    -------
    tuple
        The ``(N, d)`` float32 arrays of :func:`candidate_features` and the ``(plain,
        zoomed)`` pairs of :func:`crop_candidate_features`, the same values.
    """
    found = _by_chunk(lambda chunk: _search_chunk(chunk, scale), images)
    return found[:3], found[3:]


def _search_chunk(images: np.ndarray, scale: float) -> list[Any]:
    """:func:`search_features` of a few images, as one list."""
    plain = _candidate_chunk(images)
    return [*plain, *_crop_chunk(images, scale, wide=plain[1])]


def _crop_chunk(
    images: np.ndarray, scale: float, wide: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`crop_candidate_features` of a few images (``wide``: their wider thumbnails
    when already made)."""
    grey = images.mean(axis=-1).astype(np.float64)
    n, side = grey.shape[:2]
    centre = (side - 1) / 2.0
    grid = np.broadcast_to(centre + (np.arange(side) - centre) * scale, (n, side))
    zoomed = _bilinear(grey, grid, grid)
    return [
        (_fourier(grey), _fourier(zoomed)),
        (
            _wide_thumbnails(images) if wide is None else wide,
            _wide_thumbnails(zoomed[..., None]),
        ),
    ]


def _wide_thumbnails(images: np.ndarray) -> np.ndarray:
    """``(N, 64)`` unit rows: the wider content-following 8x8 thumbnail of ``(N, R, R, C)``."""
    return _unit(_centred_thumbnails(images, reach=1.25, power=1.0))


def _unit(x: np.ndarray) -> np.ndarray:
    """``(N, d)`` float32 rows of ``x`` centred and scaled to unit length (zero rows stay 0)."""
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def _fourier(grey: np.ndarray) -> np.ndarray:
    """``(N, d)`` float32 unit rows: log magnitudes of the lowest Fourier frequencies of the
    mean-removed ``(N, R, R)`` grey images (unchanged by circular shifts)."""
    grey = grey - grey.mean(axis=(1, 2), keepdims=True)
    # rfft2 is rfft along rows, then fft along columns: the column pass only for the kept
    # frequencies (each column's transform is its own: the same values as rfft2's)
    spectrum = np.abs(np.fft.fft(np.fft.rfft(grey, axis=2)[:, :, :_FOURIER], axis=1))
    spectrum = np.concatenate([spectrum[:, :_FOURIER], spectrum[:, -_FOURIER + 1 :]], axis=1)
    fourier = np.log1p(spectrum.reshape(len(grey), -1))
    norm = np.linalg.norm(fourier, axis=1, keepdims=True)
    return (fourier / np.where(norm > 0, norm, 1.0)).astype(np.float32)
