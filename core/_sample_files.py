"""Samples read from files for the command line: a folder of images, or a text file.

``neardup scan --split train=images/train/`` analyses the pictures themselves with the
default image input view (:class:`neardup.views.AlignedImageView`), ``--split
train=train.txt`` one text per line with :class:`neardup.views.TextView` (and its word
check): the same views the integrations use by default, for users who have files, not
activations.

A folder is read recursively; files are taken by extension (:data:`IMAGE_SUFFIXES`, case
ignored), in sorted path order, and each one's id is its path relative to the folder. When
every image sits in a subfolder (``train/cat/001.png``, torchvision's ``ImageFolder``
layout), the first subfolder is its label, so a duplicate across classes shows as a label
conflict. Each image is decoded with Pillow (``pip install "neardup[images]"``), converted
to grey or RGB and shrunk at once to at most :data:`KEPT_SIDE` pixels (aspect kept), the
largest side the views use, so a folder of photographs costs at most 3 KB per image in
memory, not its full resolution (the HTML report reads the few images it shows again, at a
larger size, with :func:`read_thumbnail`). When every image of every split is grey (also grey
pictures saved as RGB), they are analysed as grey images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import NeardupInputError

__all__ = [
    "IMAGE_SUFFIXES",
    "KEPT_SIDE",
    "ImageFolder",
    "TextLines",
    "greyed_if_grey",
    "is_sample_file",
    "read_image_folder",
    "read_lines",
    "read_text_lines",
    "read_thumbnail",
]

#: file name endings read as images (case ignored); other files in a folder are skipped
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
#: each image is shrunk to at most this many pixels a side when read (aspect kept): the
#: largest thumbnail side the image views use (AlignedImageView: 16-32 px)
KEPT_SIDE = 32
#: a colour image whose channels differ by at most this many levels everywhere is grey
#: (grey pictures saved as RGB; JPEG's chroma rounding moves them by a few levels)
GREY_SPREAD = 12
_GREY_MODES = ("1", "L", "LA", "La")
_WIDE_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


@dataclass
class ImageFolder:
    """The images of one folder: ``images`` (``n`` uint8 arrays, HW or HWC, at most
    :data:`KEPT_SIDE` a side), ``ids`` (``n`` paths relative to ``root``, the folder) and
    ``labels`` (``n`` class folder names, or ``None`` when not every image sits in a
    subfolder)."""

    images: list[np.ndarray]
    ids: list[str]
    labels: list[str] | None
    root: str


@dataclass
class TextLines:
    """The non-blank lines of a text file: ``texts`` and ``ids`` (1-based line numbers)."""

    texts: list[str]
    ids: list[int]


def is_sample_file(path: str) -> bool:
    """Whether ``path`` holds samples rather than activations: a folder or a ``.txt`` file."""
    return Path(path).is_dir() or path.lower().endswith(".txt")


def read_image_folder(
    path: str, what: str, progress: Callable[[str, int, int], None] | None = None
) -> ImageFolder:
    """Every image under folder ``path`` (see the module docstring), or a clear error.

    ``what`` names the input in messages (``"split 'train'"``); ``progress(stage, done,
    total)`` is told of each image read.
    """
    _pillow(what)
    root = Path(path)
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise NeardupInputError(
            f"{what}: folder {path!r} holds no image files (looked for "
            f"{', '.join(IMAGE_SUFFIXES)} in it and its subfolders)."
        )
    images, ids = [], []
    stage = f"reading {what} ({root.name or path})"
    for number, file in enumerate(files):
        images.append(read_thumbnail(str(file), KEPT_SIDE, what))
        ids.append(file.relative_to(root).as_posix())
        if progress is not None and (number % 256 == 255 or number + 1 == len(files)):
            progress(stage, number + 1, len(files))
    parts = [name.split("/") for name in ids]
    labels = [p[0] for p in parts] if all(len(p) > 1 for p in parts) else None
    return ImageFolder(images, ids, labels, str(root))


def read_thumbnail(path: str, side: int, what: str = "image") -> np.ndarray:
    """The image file ``path`` as a uint8 array (HW grey or HWC RGB) of at most ``side``
    pixels a side (aspect kept), or a clear error naming the file."""
    image_module, unreadable = _pillow(what)
    try:
        with image_module.open(path) as image:
            image.draft(image.mode, (side, side))  # JPEG: decoded at a reduced scale
            converted = _as_8_bit(image, image_module)
            converted.thumbnail((side, side), image_module.Resampling.BOX)
            return np.asarray(converted, dtype=np.uint8)
    except (unreadable, OSError, ValueError) as err:
        raise NeardupInputError(
            f"{what}: cannot read image {path!r} ({err}); remove or repair it."
        ) from err


def _pillow(what: str) -> tuple[Any, type[Exception]]:
    """Pillow's ``Image`` module and its unreadable-file error, or a clear error."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as err:
        raise NeardupInputError(
            f"{what}: reading a folder of images needs Pillow ({err}). Install it with: "
            'pip install "neardup[images]"'
        ) from err
    return Image, UnidentifiedImageError


def _as_8_bit(image: Any, pil: Any) -> Any:
    """``image`` as an 8-bit grey ("L") or RGB PIL image. 16-bit and float grey images are
    stretched from their own minimum to maximum (Pillow's own conversion would clip them at
    255; the views standardise each image anyway)."""
    if image.mode in _WIDE_GREY_MODES:
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
        return pil.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
    return image.convert("L" if image.mode in _GREY_MODES else "RGB")


def greyed_if_grey(folders: list[ImageFolder]) -> bool:
    """Turn every image of ``folders`` grey (in place) when all of them are grey already.

    Grey pictures saved as RGB (or re-encoded to colour JPEG) would otherwise be analysed in
    three colour views that add nothing. Decided over all folders together, so every split
    keeps the same number of channels. Returns whether the images were turned grey.
    """
    images = [image for folder in folders for image in folder.images]
    if not all(image.ndim == 2 or _spread(image) <= GREY_SPREAD for image in images):
        return False
    for folder in folders:
        folder.images = [
            image if image.ndim == 2 else np.rint(image.mean(axis=2)).astype(np.uint8)
            for image in folder.images
        ]
    return True


def _spread(image: np.ndarray) -> int:
    """The largest difference between two channels of any pixel of an HWC uint8 image."""
    return int((image.max(axis=2).astype(np.int16) - image.min(axis=2)).max())


def read_lines(path: str, what: str, entry: str = "entry") -> list[str]:
    """The lines of UTF-8 text file ``path``, or a clear error (``entry`` names what each line
    holds, for the message)."""
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise NeardupInputError(
            f"{what}: {path!r} is not UTF-8 text ({err.reason} at byte {err.start}); save it "
            f"as UTF-8, one {entry} per line."
        ) from err
    except OSError as err:
        raise NeardupInputError(f"{what}: cannot read {path!r} ({err.strerror}).") from err


def read_text_lines(path: str, what: str) -> TextLines:
    """The non-blank lines of UTF-8 text file ``path`` (one sample each), or a clear error."""
    if not Path(path).exists():
        raise NeardupInputError(f"{what}: file {path!r} does not exist.")
    lines = read_lines(path, what, "sample")
    kept = [(n + 1, line) for n, line in enumerate(lines) if line.strip()]
    if not kept:
        raise NeardupInputError(f"{what}: {path!r} holds no text (one sample per line).")
    return TextLines([line for _, line in kept], [n for n, _ in kept])
