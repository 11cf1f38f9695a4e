"""Reading, checking and resizing image files, shared by the table builder and ``verify``.

Every way an image can be unusable (missing, not an image, truncated, corrupt, too many pixels
to decode) becomes an :class:`~nights.errors.ImageError` naming the file, so that callers list
bad files instead of stopping at Pillow's exception.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"  # the last chunk of every PNG, with its CRC
_TAIL_BYTES = 4096  # one disk page: where IEND must be unless the file was cut short
# Pillow opens 16-bit grayscale as these modes; RGB conversion clips them at 255.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class ImageStatus(NamedTuple):
    """What :func:`inspect_image` found: ``problem`` (why the file is unusable, or None),
    ``description`` (size and mode, e.g. ``"768x768 RGB"``) and ``warning`` (usable, but
    read differently from what was stored)."""

    problem: str | None
    description: str | None = None
    warning: str | None = None


def _problem(error: Exception) -> str:
    """Why a file failed to open or decode, in words."""
    if isinstance(error, FileNotFoundError):
        return "missing"
    if isinstance(error, IsADirectoryError):
        return "is a folder, not an image"
    if isinstance(error, UnidentifiedImageError):
        return "not a readable image"
    if isinstance(error, Image.DecompressionBombError):
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        count = f"{int(pixels.group(1)):,} pixels" if pixels else str(error)
        return (
            f"too large to decode: {count}, over Pillow's limit of "
            f"{2 * Image.MAX_IMAGE_PIXELS:,} (a NIGHTS image has 589,824)"
        )
    return f"cannot be decoded ({error})"


def _open(source: str | os.PathLike | bytes) -> Image.Image:
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    return Image.open(handle)


def open_rgb(source: str | os.PathLike | bytes, name: str | None = None) -> Image.Image:
    """Opens a file path or encoded bytes as a fully decoded RGB image.

    Raises:
        ImageError: the file is missing or cannot be decoded; named by ``name`` (default: the
            path, or "image bytes").
    """
    try:
        with _open(source) as image:
            image.load()
            return image.convert("RGB")
    # Pillow's decoders fail on damaged files with many types (OSError, SyntaxError,
    # ValueError, EOFError, struct.error, DecompressionBombError ...): all mean "unusable".
    except Exception as error:
        where = name or ("image bytes" if isinstance(source, bytes) else str(source))
        raise ImageError(where, _problem(error)) from None


def resize_like_dreamsim(image: Image.Image, size: int) -> Image.Image:
    """DreamSim's preprocessing: RGB, then a square PIL bicubic resize (antialiased, no crop)."""
    image = image.convert("RGB")
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.BICUBIC)


def resized_pixels(source: str | os.PathLike | bytes, size: int) -> np.ndarray:
    """An image file as DreamSim preprocesses it, ``[size, size, 3]`` uint8: the same pixels as
    :func:`resize_like_dreamsim` of :func:`open_rgb`, on the fastest exact path.

    Pillow decodes (any mode; converted to RGB as upstream does, 16-bit clipped), then resizes
    with its bicubic filter: no other decoder or resize gives these pixels bit for bit, and
    decoding is most of the cost (~15 ms of ~20 for a 768 px PNG here), so what is saved is
    the rest: no copy of an image already RGB, no second conversion, no PNG encoding after.

    Raises:
        ImageError: as :func:`open_rgb`.

    Example::

        >>> import io
        >>> buffer = io.BytesIO()
        >>> Image.new("P", (31, 17)).save(buffer, format="PNG")
        >>> resized_pixels(buffer.getvalue(), 8).shape
        (8, 8, 3)
    """
    try:
        with _open(source) as image:
            image.load()
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
            return np.asarray(rgb)
    except Exception as error:  # as in open_rgb: any failure of the decoder means unusable
        where = "image bytes" if isinstance(source, bytes) else str(source)
        raise ImageError(where, _problem(error)) from None


def channels_first(pixels: np.ndarray):
    """A contiguous uint8 torch tensor ``[..., 3, H, W]`` of ``[..., H, W, 3]`` pixels (or of
    a PIL image): torch stacks contiguous images ~20x faster than permuted views of them
    (~25 ms against ~540 ms for a batch of 32 at 224 px here).

    Example::

        >>> channels_first(np.zeros((2, 4, 5, 3), dtype=np.uint8)).shape
        torch.Size([2, 3, 4, 5])
    """
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(pixels), -1, -3)))


def encode_png(image: Image.Image) -> bytes:
    """Lossless, stored without compression: a 224 px image decodes in ~0.6 ms instead of
    ~1.5 ms at zlib level 1, for ~45% more bytes (the pre-resized copy exists for speed)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def _cut_short(path: Path) -> bool:
    """A PNG whose last page lacks the IEND chunk was cut short (read without decoding)."""
    with open(path, "rb") as handle:
        if handle.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
            return False
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - _TAIL_BYTES))
        return _PNG_END not in handle.read()


def inspect_image(path: Path, decode: bool) -> ImageStatus:
    """What is wrong with an image file, its size and mode, and what to warn about.

    Without ``decode`` only the header and the end of the file are read (existence, format,
    size, a PNG cut short); with it every pixel is decoded, which also finds corrupted data.
    """
    try:
        with Image.open(path) as image:
            description = f"{image.size[0]}x{image.size[1]} {image.mode}"
            wide = image.mode in _WIDE_MODES
            if _cut_short(path):
                return ImageStatus("truncated (a PNG without its end: the file was cut short)")
            if decode:
                image.load()
    except Exception as error:  # as in open_rgb: any failure of the decoder means unusable
        return ImageStatus(_problem(error))
    warning = (
        f"{image.mode} pixels (16-bit or wider): read as RGB, every value above 255 becomes "
        "white, as upstream DreamSim reads it; scores stay comparable to upstream's, but the "
        "picture is not what the file holds"
        if wide
        else None
    )
    return ImageStatus(None, description, warning)


def check_image(path: Path, decode: bool) -> str | None:
    """Why ``path`` is not a usable image, or None when it is (see :func:`inspect_image`)."""
    return inspect_image(path, decode).problem
