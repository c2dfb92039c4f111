"""Progress reports yielded by long-running jobs.

Long work is written as generators that yield Progress; the CLI draws a bar,
the GUI a task row, and either can stop iterating to cancel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generator, TypeVar

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


def run_to_completion(job: "Job[T]", on_progress=None) -> T:
    """Drive a job generator to its end and return its result."""
    while True:
        try:
            progress = next(job)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(progress)
