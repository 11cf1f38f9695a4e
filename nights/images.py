"""Reading, checking and resizing image files, shared by the table builder and ``verify``."""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def open_rgb(source: str | os.PathLike | bytes) -> Image.Image:
    """Opens a file path or encoded bytes as a fully decoded RGB image."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(handle) as image:
        image.load()
        return image.convert("RGB")


def resize_like_dreamsim(image: Image.Image, size: int) -> Image.Image:
    """DreamSim's preprocessing: RGB, then a square PIL bicubic resize (antialiased, no crop)."""
    image = image.convert("RGB")
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.BICUBIC)


def encode_png(image: Image.Image) -> bytes:
    """Lossless, stored without compression: a 224 px image decodes in ~0.6 ms instead of
    ~1.5 ms at zlib level 1, for ~45% more bytes (the pre-resized copy exists for speed)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def inspect_image(path: Path, decode: bool) -> tuple[str | None, str | None]:
    """``(problem, description)`` of an image file: why it is unusable (None when it is
    usable) and its size and mode, e.g. ``"768x768 RGB"``.

    Without ``decode`` only the header is read (existence, format, size); with it every pixel
    is decoded, which finds truncated and corrupted files.
    """
    try:
        with Image.open(path) as image:
            description = f"{image.size[0]}x{image.size[1]} {image.mode}"
            if decode:
                image.load()
    except FileNotFoundError:
        return "missing", None
    except IsADirectoryError:
        return "is a folder, not an image", None
    except UnidentifiedImageError:
        return "not a readable image", None
    except (OSError, SyntaxError, ValueError) as error:
        return f"cannot be decoded ({error})", None
    return None, description


def check_image(path: Path, decode: bool) -> str | None:
    """Why ``path`` is not a usable image, or None when it is (see :func:`inspect_image`)."""
    return inspect_image(path, decode)[0]
