"""Progress reports yielded by long-running jobs.

Long work is written as generators that yield Progress; the CLI draws a bar,
the GUI a task row, and either can stop iterating to cancel.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar, cast

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    done: float
    total: float
    message: str = ""

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


Job = Generator[Progress, None, T]


def run_to_completion(job: Job[T], on_progress: Callable[[Progress], object] | None = None) -> T:
    """Drive a job generator to its end and return its result."""
    while True:
        try:
            progress = next(job)
        except StopIteration as stop:
            return cast(T, stop.value)
        if on_progress is not None:
            on_progress(progress)


def sub_job(job: Job[T], start: float, span: float, total: float, label: str = "") -> Job[T]:
    """Generator: run job as the stretch [start, start + span] of a larger job of `total`,
    passing its progress on (messages prefixed with label); returns the job's value.

    The inner job is always closed when this one ends: a cancel (GeneratorExit) runs its
    cleanup (restoring weights, marking a store run interrupted) at once, not at garbage
    collection.
    """
    try:
        while True:
            try:
                progress = next(job)
            except StopIteration as stop:
                return cast(T, stop.value)
            message = f"{label}: {progress.message}" if label and progress.message else (label or progress.message)
            yield Progress(start + span * progress.fraction, total, message)
    finally:
        job.close()
