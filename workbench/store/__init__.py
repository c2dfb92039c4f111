"""The HDF5 activation store: one file, many runs, read lazily."""

from .layout import FORMAT_NAME, FORMAT_VERSION, STATUS_COMPLETE, STATUS_DAMAGED, STATUS_INTERRUPTED, STATUS_WRITING
from .reader import ActivationStore, StoredRun, StoreHit
from .writer import RunWriter

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "STATUS_COMPLETE",
    "STATUS_DAMAGED",
    "STATUS_INTERRUPTED",
    "STATUS_WRITING",
    "ActivationStore",
    "RunWriter",
    "StoreHit",
    "StoredRun",
]
