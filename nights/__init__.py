"""nights: get, inspect, audit and extend NIGHTS, the human perceptual-similarity dataset.

Importing this package is cheap: ``datasets``, ``torch`` and the other heavy libraries load
inside the functions that need them.
"""

from .errors import (
    DatasetNotFoundError,
    DownloadError,
    ImageError,
    IntegrityError,
    NightsError,
    SchemaError,
)
from .schema import read_data_csv, read_jnd_csv, read_raw_csv
from .synthetic import make_synthetic_nights
from .table import SPLITS, load_jnd, load_nights

__version__ = "0.1.0"

__all__ = [
    "SPLITS",
    "DatasetNotFoundError",
    "DownloadError",
    "ImageError",
    "IntegrityError",
    "NightsError",
    "SchemaError",
    "load_jnd",
    "load_nights",
    "make_synthetic_nights",
    "read_data_csv",
    "read_jnd_csv",
    "read_raw_csv",
]
