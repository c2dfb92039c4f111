"""Typed analysis parameters: defaults, parsing from text, validation with messages that name the fix.

The same declaration drives the CLI (`--param NAME=VALUE`), the GUI's parameter
form, workspaces and report specs, so a plugin states each parameter once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import InputError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One parameter of an analysis. Subclasses say what values it accepts."""

    name: str
    default: Any = None
    help: str = ""
    label: str = ""

    kind: ClassVar[str] = "text"

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ")

    def accepts(self) -> str:
        """What values are valid, in words (used in error messages and help)."""
        return "any text"

    def parse(self, text: str) -> Any:
        """A value from its text form (CLI, report spec), validated."""
        return self.validate(text)

    def validate(self, value: Any) -> Any:
        return value

    def to_text(self, value: Any) -> str:
        return "" if value is None else str(value)

    def fail(self, value: Any) -> InputError:
        return InputError(f"Parameter {self.name!r} cannot be {value!r}.", f"{self.name} accepts {self.accepts()}")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "default": self.default, "accepts": self.accepts(), "help": self.help}


@dataclass(frozen=True)
class Text(Param):
    kind: ClassVar[str] = "text"
    allow_empty: bool = True

    def accepts(self) -> str:
        return "any text" if self.allow_empty else "non-empty text"

    def validate(self, value: Any) -> Any:
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise self.fail(value)
        if not self.allow_empty and not value.strip():
            raise self.fail(value)
        return value


@dataclass(frozen=True)
class Int(Param):
    kind: ClassVar[str] = "int"
    minimum: int | None = None
    maximum: int | None = None

    def accepts(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"a whole number from {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f"a whole number of at least {self.minimum}"
        if self.maximum is not None:
            return f"a whole number of at most {self.maximum}"
        return "a whole number"

    def parse(self, text: str) -> Any:
        try:
            return self.validate(int(str(text).strip()))
        except ValueError:
            raise self.fail(text) from None

    def validate(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise self.fail(value)
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise self.fail(value)
        return value


@dataclass(frozen=True)
class Float(Param):
    kind: ClassVar[str] = "float"
    minimum: float | None = None
    maximum: float | None = None

    def accepts(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"a number from {self.minimum:g} to {self.maximum:g}"
        if self.minimum is not None:
            return f"a number of at least {self.minimum:g}"
        if self.maximum is not None:
            return f"a number of at most {self.maximum:g}"
        return "a number"

    def parse(self, text: str) -> Any:
        try:
            return self.validate(float(str(text).strip()))
        except ValueError:
            raise self.fail(text) from None

    def validate(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(value)
        value = float(value)
        if value != value or (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise self.fail(value)
        return value


@dataclass(frozen=True)
class Bool(Param):
    kind: ClassVar[str] = "bool"
    default: Any = False

    def accepts(self) -> str:
        return "true or false"

    def parse(self, text: str) -> Any:
        lowered = str(text).strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise self.fail(text)

    def validate(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise self.fail(value)
        return value

    def to_text(self, value: Any) -> str:
        return "true" if value else "false"


@dataclass(frozen=True)
class Choice(Param):
    kind: ClassVar[str] = "choice"
    choices: tuple[str, ...] = ()

    def accepts(self) -> str:
        return "one of " + ", ".join(self.choices)

    def validate(self, value: Any) -> Any:
        if value not in self.choices:
            raise self.fail(value)
        return value

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "choices": list(self.choices)}


@dataclass(frozen=True)
class IntList(Param):
    """A list of whole numbers, written `1,2,5` (e.g. layers or token positions)."""

    kind: ClassVar[str] = "int-list"
    default: Any = field(default_factory=tuple)
    minimum: int | None = None

    def accepts(self) -> str:
        floor = f" (each at least {self.minimum})" if self.minimum is not None else ""
        return f"whole numbers separated by commas, such as 0,3,5{floor}"

    def parse(self, text: str) -> Any:
        parts = [p.strip() for p in str(text).split(",") if p.strip()]
        try:
            return self.validate(tuple(int(p) for p in parts))
        except ValueError:
            raise self.fail(text) from None

    def validate(self, value: Any) -> Any:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise self.fail(value)
        items = tuple(value)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in items):
            raise self.fail(value)
        if self.minimum is not None and any(v < self.minimum for v in items):
            raise self.fail(value)
        return items

    def to_text(self, value: Any) -> str:
        return ",".join(str(v) for v in value)


def resolve_params(params: list[Param], given: dict[str, Any] | None = None, texts: dict[str, str] | None = None) -> dict[str, Any]:
    """The full, validated parameter dict: defaults, then values, then text values (CLI)."""
    by_name = {p.name: p for p in params}
    unknown = [n for n in list(given or {}) + list(texts or {}) if n not in by_name]
    if unknown:
        known = ", ".join(by_name) or "none"
        raise InputError(f"Unknown parameter {unknown[0]!r}.", f"this analysis takes: {known}")
    values: dict[str, Any] = {}
    for param in params:
        if texts and param.name in texts:
            values[param.name] = param.parse(texts[param.name])
        elif given and param.name in given:
            values[param.name] = param.validate(given[param.name])
        else:
            values[param.name] = param.default
    return values


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """`NAME=VALUE` strings (from --param) into a dict of texts."""
    texts: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--param {item!r} is not NAME=VALUE.", "write it as --param layer=3")
        if name.strip() in texts:
            raise InputError(f"--param {name.strip()} is given twice ({texts[name.strip()]!r} and {value!r}).", "give each parameter once")
        texts[name.strip()] = value
    return texts
