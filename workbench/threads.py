"""How many CPU threads torch may use, for the app and the command line alike.

WORKBENCH_TORCH_THREADS (a whole number) sets it everywhere. Without it the
command line keeps torch's own choice (every core), and the app leaves one core
for the window (see workbench.gui.app.leave_a_core_for_the_window).
"""

from __future__ import annotations

import os

from .errors import WorkbenchError

VARIABLE = "WORKBENCH_TORCH_THREADS"


def chosen_torch_threads() -> int | None:
    """The thread count the user chose, or None when the variable is unset or empty."""
    text = os.environ.get(VARIABLE, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise WorkbenchError(
            f"{VARIABLE} is {text!r}, not a number of threads",
            hint="set it to a whole number such as 2, or unset it to let torch choose",
        )
    return int(text)


def apply_torch_threads(default: int | None = None) -> None:
    """Set torch's intra-op thread count to the user's choice, else to `default`; with neither,
    leave torch's own choice (and do not import torch)."""
    chosen = chosen_torch_threads()
    if chosen is None and default is not None and not os.environ.get("OMP_NUM_THREADS"):
        chosen = max(1, default)
    if chosen is not None:
        import torch

        torch.set_num_threads(chosen)
