"""nights: get, inspect, audit and extend NIGHTS, the human perceptual-similarity dataset.

Importing this package is cheap: ``pandas``, ``datasets``, ``torch`` and the other heavy
libraries load with the first function that needs them (``load_nights`` and
``make_synthetic_nights`` load their modules on first use), so ``nights --help`` starts fast.

Example::

    >>> import nights
    >>> table = nights.load_nights("test", root=sample_root)
    >>> table.column_names[:4], set(table["split"]) == {"test"}
    (['id', 'ref', 'left', 'right'], True)
"""

from ._lazy import lazy_attributes
from .errors import (
    DatasetNotFoundError,
    DownloadError,
    ImageError,
    IntegrityError,
    MetricError,
    NightsError,
    SchemaError,
)
from .schema import SPLITS, read_data_csv, read_jnd_csv, read_raw_csv

__version__ = "0.1.0"

# Public names whose modules import pandas, pyarrow or numpy: loaded when first asked for.
__getattr__, __dir__ = lazy_attributes(
    __name__, {"load_jnd": "table", "load_nights": "table", "make_synthetic_nights": "synthetic"}
)

__all__ = [
    "SPLITS",
    "DatasetNotFoundError",
    "DownloadError",
    "ImageError",
    "IntegrityError",
    "MetricError",
    "NightsError",
    "SchemaError",
    "load_jnd",
    "load_nights",
    "make_synthetic_nights",
    "read_data_csv",
    "read_jnd_csv",
    "read_raw_csv",
]
