"""Raw pixels in Arrow: how a table built with ``images="pixels"`` holds its images.

Each image is a fixed-shape ``[S, S, 3]`` uint8 array (rows, columns, RGB: what
``numpy.asarray`` gives for a PIL image), stored as nested Arrow fixed-size lists: no offsets,
no compression, no header, ``S * S * 3`` bytes an image. Reading needs no decoder: the values
of a memory-mapped column are a numpy view of the Arrow buffer.

Example::

    >>> import numpy as np
    >>> images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    >>> column = to_arrow(images)
    >>> is_pixel_type(column.type), to_numpy(column).shape
    (True, (2, 4, 4, 3))
    >>> bool((to_numpy(column.slice(1)) == images[1:]).all())
    True
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .errors import IntegrityError

CHANNELS = 3


def feature(size: int):
    """The ``datasets`` feature of a pixel column at side ``size`` (nested fixed-length
    sequences of uint8, so Arrow stores them as fixed-size lists)."""
    from datasets import Sequence, Value

    return Sequence(Sequence(Sequence(Value("uint8"), length=CHANNELS), length=size), length=size)


def _shape(arrow_type: pa.DataType) -> tuple[tuple[int, ...], pa.DataType]:
    """The sizes of nested fixed-size lists, outermost first, and the type of their values."""
    shape = []
    while pa.types.is_fixed_size_list(arrow_type):
        shape.append(arrow_type.list_size)
        arrow_type = arrow_type.value_type
    return tuple(shape), arrow_type


def is_pixel_type(arrow_type: pa.DataType) -> bool:
    """Whether a column of this Arrow type holds raw pixels (``[S][S][3]`` uint8)."""
    shape, values = _shape(arrow_type)
    return (
        values == pa.uint8() and len(shape) == 3 and shape[0] == shape[1] and shape[2] == CHANNELS
    )


def is_pixel_column(arrow_type: pa.DataType) -> bool:
    """Whether a column is meant as raw pixels rather than ``datasets.Image`` storage: any
    fixed-size list (:func:`to_numpy` checks its shape and type)."""
    return pa.types.is_fixed_size_list(arrow_type)


def to_arrow(images: np.ndarray) -> pa.FixedSizeListArray:
    """The Arrow column of ``[N, S, S, 3]`` uint8 images (their buffer, not a copy, when
    contiguous)."""
    _, height, width, channels = images.shape
    values = pa.array(np.ascontiguousarray(images, dtype=np.uint8).reshape(-1))
    for size in (channels, width, height):
        values = pa.FixedSizeListArray.from_arrays(values, size)
    return values


def _view(chunk: pa.Array, name: str, ids) -> np.ndarray:
    """``[N, S, S, 3]`` over one chunk's buffer (a slice of it when the chunk is a slice)."""
    shape, _ = _shape(chunk.type)
    values = chunk
    for level in range(len(shape) + 1):
        if values.null_count:  # a null anywhere would shift every image after it
            first = values.is_null().to_numpy(zero_copy_only=False).argmax()
            item = int(first) // int(np.prod(shape[:level]))  # entries per image so far
            where = f"triplet {ids[item]}" if ids is not None else f"row {item}"
            raise IntegrityError(
                f"{name}, {where}: no pixels (null); rebuild the table "
                "(`nights build --images pixels --image-size S --rebuild`)"
            )
        if level < len(shape):
            values = values.flatten()  # honours the chunk's offset, unlike .values
    return values.to_numpy(zero_copy_only=True).reshape(len(chunk), *shape)


def to_numpy(column: pa.Array | pa.ChunkedArray, name: str = "pixels", ids=None) -> np.ndarray:
    """The images of a pixel column as ``[N, S, S, 3]`` uint8.

    One chunk is a read-only view of its Arrow buffer (memory-mapped for a built table: no
    copy); several are gathered into one new array (one copy, nothing decoded).

    Args:
        column: the column (or a slice of it).
        name: the column's name, for errors.
        ids: the triplet ids of its rows, for errors (default: rows are named by position).

    Raises:
        IntegrityError: not ``[S, S, 3]`` uint8, or an image is null (the column and the
            triplet named).
    """
    if not is_pixel_type(column.type):
        shape, values = _shape(column.type)
        found = f"[{', '.join(map(str, shape))}] {values}" if shape else str(column.type)
        raise IntegrityError(
            f"{name}: raw pixels must be [S, S, {CHANNELS}] uint8 arrays, not {found}; "
            "rebuild the table (`nights build --images pixels --image-size S --rebuild`)"
        )
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    views, start = [], 0
    for chunk in chunks:
        if len(chunk):
            views.append(_view(chunk, name, None if ids is None else ids[start:]))
        start += len(chunk)
    if len(views) == 1:
        return views[0]
    if not views:
        return np.zeros((0, *_shape(column.type)[0]), dtype=np.uint8)
    return np.concatenate(views)
