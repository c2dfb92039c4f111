"""Typed results: HDF5 round trips and report sections."""

from .base import Figure, ReportSection, Result, ResultMeta, Table
from .storage import list_results, load_results, read_result, save_result, write_result

__all__ = [
    "Figure",
    "ReportSection",
    "Result",
    "ResultMeta",
    "Table",
    "list_results",
    "load_results",
    "read_result",
    "save_result",
    "write_result",
]
