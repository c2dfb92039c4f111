"""Typed analysis results: what an analysis returns, saves to HDF5 and renders into a report.

A result type is a dataclass subclassing Result with a `kind` ("<plugin id>/<name>").
The default save/load stores numpy arrays as datasets and every other field as
JSON, so most result types need no I/O code; a type with special needs overrides
save() and load().
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import h5py
import numpy as np

from ..errors import StoreError

STRING = h5py.string_dtype("utf-8")


@dataclass
class Figure:
    """A figure of a report section: SVG text (vector, preferred) or PNG bytes."""

    title: str
    svg: str | None = None
    png: bytes | None = None
    caption: str = ""


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class ReportSection:
    """What a result contributes to a report: figures, key numbers, and how to read them."""

    title: str
    how_to_read: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ResultMeta:
    """Provenance: which plugin made a result, from what, with which parameters."""

    plugin_id: str
    plugin_version: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    model_spec: str = ""
    model_name: str = ""
    model_fingerprint: str = ""
    prompts: list[str] = field(default_factory=list)
    prepend_bos: bool | None = None
    created: str = ""
    seconds: float = 0.0
    reused_activations: bool = False
    versions: dict[str, str] = field(default_factory=dict)
    query: str = ""  # set when a query (a drill-down) made this result from another one
    device: str = ""  # where the model ran: cpu, cuda, cuda:1, mps
    dtype: str = ""  # the model's weights: float32, bfloat16 or float16

    @property
    def half_precision(self) -> bool:
        return self.dtype in ("bfloat16", "float16")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), default=_json_default)

    @classmethod
    def from_json(cls, text: str) -> ResultMeta:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


class Result:
    """Base of every result type. Subclasses are dataclasses and set `kind`."""

    kind: ClassVar[str] = ""
    meta: ResultMeta | None = None

    # -- HDF5 ---------------------------------------------------------------------------------

    def save(self, group: h5py.Group) -> None:
        """Write this result's fields into group (arrays as datasets, the rest as JSON)."""
        if not dataclasses.is_dataclass(self):
            raise TypeError(f"{type(self).__name__} is not a dataclass; override save() and load()")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray) and value.dtype != object:
                group.create_dataset(f"fields/{f.name}", data=value, compression="gzip" if value.nbytes > 1 << 16 else None)
            else:
                data = json.dumps(value, default=_json_default)
                group.create_dataset(f"json/{f.name}", data=data, dtype=STRING)

    @classmethod
    def load(cls, group: h5py.Group) -> Result:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} is not a dataclass; override save() and load()")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f"fields/{f.name}" in group:
                values[f.name] = group[f"fields/{f.name}"][()]
            elif f"json/{f.name}" in group:
                raw = group[f"json/{f.name}"][()]
                values[f.name] = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise StoreError(f"Stored {cls.kind or cls.__name__} result lacks its field {f.name!r}.", "the file is damaged or from another version")
        return cls(**values)

    # -- what people see ------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Key numbers as JSON-able values (for --json and the report's table)."""
        out: dict[str, Any] = {}
        if dataclasses.is_dataclass(self):
            for f in dataclasses.fields(self):
                value = getattr(self, f.name)
                if isinstance(value, (int, float, str, bool)) or value is None:
                    out[f.name] = value
        return out

    def report(self) -> ReportSection:
        """The report section for this result. Override to add figures."""
        numbers = self.summary()
        table = Table("Key numbers", ["quantity", "value"], [[k, v] for k, v in numbers.items()])
        return ReportSection(title=type(self).__name__, tables=[table] if numbers else [])

    def to_json_dict(self) -> dict[str, Any]:
        """summary() made strictly JSON-safe (numpy scalars and tuples converted)."""
        return cast(dict[str, Any], json.loads(json.dumps(self.summary(), default=_json_default)))
