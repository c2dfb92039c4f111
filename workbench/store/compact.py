"""Reclaiming the space of runs that never completed.

An uncompressed run allocates all its space up front (that is what makes a kill safe), so
a run killed at 88 of 200 prompts keeps its whole allocation, and HDF5 never reuses space
inside a file. Compacting copies what is worth keeping (complete runs and complete
results) into a new file, checks it, and only then renames it over the old one: a kill
at any moment leaves either the old file or the new one, both whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py

from ..disk import disk_bytes, replacing
from ..errors import StoreError
from .layout import RESULTS_GROUP, STATUS_COMPLETE, open_store_file
from .lock import writing
from .reader import read_runs


@dataclass
class Compaction:
    path: Path
    bytes_before: int
    bytes_after: int
    kept_runs: list[str] = field(default_factory=list)
    dropped_runs: list[str] = field(default_factory=list)  # "run-0003 (interrupted)"
    kept_results: int = 0
    dropped_results: int = 0


def compact_store(path: str | Path, out: str | Path | None = None) -> Compaction:
    """Rewrite the store at path without its incomplete runs and results (into out when
    given, else in place). Holds the store's writer lock throughout."""
    path = Path(path)
    target = Path(out) if out else path
    with writing(path), replacing(target, ".compacting") as partial:
        source = open_store_file(path, "r")
        try:
            report = Compaction(path=target, bytes_before=disk_bytes(path), bytes_after=0)
            with h5py.File(partial, "w") as copy:
                for key, value in source.attrs.items():
                    copy.attrs[key] = value
                runs = copy.create_group("runs")
                for run in read_runs(source):
                    if run.complete and run.full_damage is None:
                        source.copy(source["runs"][run.id], runs, name=run.id)
                        report.kept_runs.append(run.id)
                    else:
                        report.dropped_runs.append(f"{run.id} ({'damaged' if run.full_damage is not None else run.status})")
                if RESULTS_GROUP in source:
                    results = copy.create_group(RESULTS_GROUP)
                    for result_id, group in source[RESULTS_GROUP].items():
                        if group.attrs.get("status") == STATUS_COMPLETE:
                            source.copy(group, results, name=result_id)
                            report.kept_results += 1
                        else:
                            report.dropped_results += 1
        finally:
            source.close()
        _check_copy(partial, report)  # an error leaves the old file as it was
    report.bytes_after = disk_bytes(target)
    return report


def _check_copy(partial: Path, report: Compaction) -> None:
    """The new file reads back with exactly the runs kept, each complete."""
    handle = open_store_file(partial, "r")
    try:
        runs = read_runs(handle)
        if [run.id for run in runs] != report.kept_runs or not all(run.complete for run in runs):
            raise StoreError(f"The compacted copy of {report.path} did not read back whole.", "the original file is unchanged; please report this")
    finally:
        handle.close()
