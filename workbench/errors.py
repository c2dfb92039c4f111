"""The one error type users see.

Every problem a user can cause (a bad spec, an empty prompt, a foreign file) is
raised as a WorkbenchError whose message names the problem and whose hint names
the fix; the CLI and the GUI print these as one line instead of a traceback.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ModelLoadError(WorkbenchError):
    pass


class InputError(WorkbenchError):
    pass


class StoreError(WorkbenchError):
    pass


class HookError(WorkbenchError):
    pass


class EngineError(WorkbenchError):
    """What an engine cannot do (workbench/engines): an analysis not ported to it, a hook
    point its family map does not place, a write it cannot make."""
