"""Report specs: the TOML file that names a model, prompts and analyses, read into dataclasses.

Everything that can be checked without loading the model is checked here (plugin
ids, parameter names and values, file parameters), so a typo fails in a second
with the line it is on instead of after the model has loaded.

    title = "Induction in the lab model"
    [model]
    spec = "lab:induction"
    [prompts]
    text = ["t1 t2 t3 t4 t1 t2 t3"]
    [[analysis]]
    plugin = "logit-lens"
    params = { top_k = 3 }

examples/README.md documents every key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, WorkbenchError
from ..models.placement import Placement
from ..prompts_file import read_prompts_file

BOS_CHOICES = ("auto", "on", "off")
DTYPES = ("float32", "float16", "bfloat16")

_TOP_KEYS = {"title", "model", "prompts", "store", "analysis"}
_MODEL_KEYS = {"spec", "device", "device_map", "max_memory", "dtype", "bos"}
_PROMPT_KEYS = {"text", "file"}
_ANALYSIS_KEYS = {"plugin", "title", "params", "files", "prompts"}


@dataclass
class ModelChoice:
    spec: str
    device: str = "cpu"
    dtype: str = "float32"
    bos: str = "auto"
    device_map: str | None = None  # accelerate's placement (workbench.models.placement)
    max_memory: str = ""

    @property
    def prepend_bos(self) -> bool | None:
        return None if self.bos == "auto" else self.bos == "on"


@dataclass
class AnalysisSpec:
    plugin: str
    title: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    prompts: list[str] | None = None  # None: the report's prompts
    line: int = 0  # of its [[analysis]] header, for error messages


@dataclass
class ReportSpec:
    title: str
    model: ModelChoice
    prompts: list[str] = field(default_factory=list)
    analyses: list[AnalysisSpec] = field(default_factory=list)
    store: Path | None = None  # an activation store to read and fill
    text: str = ""  # the TOML as written, shown in the report so it can be rerun
    path: Path | None = None

    def where(self, analysis: AnalysisSpec) -> str:
        name = self.path.name if self.path else "spec"
        return f"{name} line {analysis.line}" if analysis.line else name


def load_spec(path: str | Path, allow_outside: bool = False) -> ReportSpec:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Report spec not found: {path}.", "give a .toml file (examples/report.toml is one to start from)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read the report spec {path}: {exc}.", "give a UTF-8 text file") from exc
    return parse_spec(text, base_dir=path.parent, path=path, allow_outside=allow_outside)


def _fail(where: str, message: str, hint: str | None) -> InputError:
    return InputError(f"{where}: {message}", hint)


def _analysis_lines(text: str) -> list[int]:
    # tomllib keeps no positions, so the n-th [[analysis]] header is found in the text
    # to point errors at the right entry.
    return [n for n, line in enumerate(text.splitlines(), start=1) if re.match(r"\s*\[\[\s*analysis\s*\]\]", line)]


def _unknown_keys(table: dict, allowed: set[str], where: str, what: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise _fail(where, f"unknown key {extra[0]!r} in {what}.", f"{what} takes: {', '.join(sorted(allowed))}")


def _string(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"{key} must be non-empty text, not {value!r}.", f'write it as {key} = "..."')
    return value


def _string_list(value: Any, where: str, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(where, f"{key} must be a list of strings.", f'write it as {key} = ["first prompt", "second prompt"]')
    return list(value)


def _inside(value: str, base_dir: Path, where: str, name: str, allow_outside: bool) -> Path:
    """A spec's path, relative to the spec's folder and, unless allowed, inside it: a spec
    someone shares must not read or write anything else of yours."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else (base_dir / path)
    if not allow_outside and not path.resolve().is_relative_to(Path(base_dir).resolve()):
        raise _fail(
            where,
            f"{name} {value!r} points outside the spec's folder {Path(base_dir).resolve()}.",
            "move the file into that folder, or pass --allow-outside-paths if you trust this spec",
        )
    return path


def _resolve_file(value: Any, base_dir: Path, where: str, name: str, allow_outside: bool = False) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"file parameter {name!r} must be a path, not {value!r}.", "paths are relative to the spec's folder")
    path = _inside(value, base_dir, where, f"file parameter {name!r}:", allow_outside)
    if not path.exists():
        raise _fail(where, f"file parameter {name!r}: {path} does not exist.", "paths are relative to the spec's folder")
    return str(path.resolve())


def _budgets(value, name: str) -> str:
    """model.max_memory as a string ("0=20GiB,cpu=30GiB") or a table ({0 = "20GiB", cpu = "30GiB"})."""
    if isinstance(value, dict):
        return ",".join(f"{key}={size}" for key, size in value.items())
    return _string(value, name, "model.max_memory") if value else ""


def parse_spec(text: str, base_dir: str | Path = ".", path: Path | None = None, allow_outside: bool = False) -> ReportSpec:
    """A ReportSpec from TOML text; relative paths are taken from base_dir and must stay
    inside it unless allow_outside. Raises InputError."""
    base_dir = Path(base_dir)
    name = path.name if path else "spec"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message already carries "(at line N, column M)".
        raise InputError(f"{name} is not valid TOML: {exc}.", "fix the TOML syntax at that line") from None
    _unknown_keys(data, _TOP_KEYS, name, "the top level")

    model_table = data.get("model")
    if isinstance(model_table, str):
        model_table = {"spec": model_table}
    if not isinstance(model_table, dict) or "spec" not in model_table:
        raise _fail(name, "no model given.", 'add  [model]  spec = "lab:induction"  (or smollm2, a folder, a .gguf file)')
    _unknown_keys(model_table, _MODEL_KEYS, name, "[model]")
    model = ModelChoice(
        spec=_string(model_table["spec"], name, "model.spec"),
        device=_string(model_table.get("device", "cpu"), name, "model.device"),
        dtype=str(model_table.get("dtype", "float32")),
        bos=str(model_table.get("bos", "auto")),
        device_map=_string(model_table["device_map"], name, "model.device_map") if "device_map" in model_table else None,
        max_memory=_budgets(model_table.get("max_memory", ""), name),
    )
    Placement(model.device, model.device_map, model.max_memory)  # a bad device map or budget fails here
    if model.dtype not in DTYPES:
        raise _fail(name, f"model.dtype cannot be {model.dtype!r}.", f"use one of {', '.join(DTYPES)}")
    if model.bos not in BOS_CHOICES:
        raise _fail(name, f"model.bos cannot be {model.bos!r}.", f"use one of {', '.join(BOS_CHOICES)}")

    prompts_table = data.get("prompts", {})
    if isinstance(prompts_table, (list, str)):
        prompts_table = {"text": prompts_table}
    if not isinstance(prompts_table, dict):
        raise _fail(name, "[prompts] must be a table.", 'write  [prompts]  text = ["..."]  and/or  file = "prompts.txt"')
    _unknown_keys(prompts_table, _PROMPT_KEYS, name, "[prompts]")
    prompts = _string_list(prompts_table.get("text", []), name, "prompts.text")
    if "file" in prompts_table:
        try:
            prompts += read_prompts_file(_resolve_file(prompts_table["file"], base_dir, name, "prompts.file", allow_outside))
        except InputError as exc:
            raise _fail(name, exc.message, exc.hint) from None

    store = data.get("store")
    if store is not None:
        store = _inside(_string(store, name, "store"), base_dir, name, "store", allow_outside)

    entries = data.get("analysis", [])
    if not isinstance(entries, list) or not entries:
        raise _fail(name, "no analyses given.", 'add one or more  [[analysis]]  plugin = "logit-lens"  tables')
    lines = _analysis_lines(text)
    analyses = []
    for index, entry in enumerate(entries):
        line = lines[index] if index < len(lines) else 0
        where = f"{name} line {line}" if line else f"{name} analysis {index + 1}"
        if not isinstance(entry, dict):
            raise _fail(where, "each analysis must be a table.", 'write  [[analysis]]  plugin = "..."')
        _unknown_keys(entry, _ANALYSIS_KEYS, where, "[[analysis]]")
        if "plugin" not in entry:
            raise _fail(where, "this analysis names no plugin.", 'add  plugin = "logit-lens"  (workbench plugins lists them)')
        params = entry.get("params", {})
        files = entry.get("files", {})
        if not isinstance(params, dict) or not isinstance(files, dict):
            raise _fail(where, "params and files must be tables.", "write  params = { top_k = 3 }  or an [analysis.params] table")
        clash = sorted(set(params) & set(files))
        if clash:
            raise _fail(where, f"{clash[0]!r} is given both in params and in files.", "give it once")
        values = dict(params)
        for key, value in files.items():
            values[key] = _resolve_file(value, base_dir, where, key, allow_outside)
        analyses.append(
            AnalysisSpec(
                plugin=_string(entry["plugin"], where, "plugin"),
                title=str(entry.get("title", "")),
                params=values,
                prompts=_string_list(entry["prompts"], where, "prompts") if "prompts" in entry else None,
                line=line,
            )
        )
    title = data.get("title", "")
    if not isinstance(title, str):
        raise _fail(name, "title must be text.", 'write  title = "..."')
    return ReportSpec(
        title=title or "Analysis report",
        model=model,
        prompts=prompts,
        analyses=analyses,
        store=store,
        text=text,
        path=path,
    )


def check_spec(spec: ReportSpec, registry) -> list[dict[str, Any]]:
    """Every analysis's validated parameters, checked against its plugin. Raises InputError naming the entry."""
    resolved = []
    for analysis in spec.analyses:
        where = spec.where(analysis)
        record = registry.record(analysis.plugin)
        if record is None:
            known = ", ".join(r.id for r in registry if r.ok and r.plugin.analysis is not None) or "none"
            raise _fail(where, f"no plugin {analysis.plugin!r}.", f"available: {known} ('workbench plugins' lists them)")
        if not record.ok:
            raise _fail(where, f"plugin {analysis.plugin!r} is disabled: {record.error}.", "fix or update the plugin; 'workbench plugins' shows its error")
        plugin = record.plugin
        if plugin.analysis is None:
            raise _fail(where, f"plugin {analysis.plugin!r} has no analysis to run.", "reports run analyses; choose another plugin")
        try:
            values = plugin.analysis.resolve(given=analysis.params)
            for param in plugin.analysis.params:
                # A default the parameter itself rejects (an empty subject, say) means "required":
                # better said now than by the plugin after the model has loaded.
                if param.name not in analysis.params:
                    try:
                        param.validate(param.default)
                    except WorkbenchError:
                        raise InputError(f"parameter {param.name!r} needs a value.", f"add it to params: {param.name} accepts {param.accepts()}") from None
            resolved.append(values)
        except WorkbenchError as exc:
            raise _fail(f"{where} ({plugin.id})", exc.message, exc.hint or "") from None
        prompts = analysis.prompts if analysis.prompts is not None else spec.prompts
        if plugin.analysis.needs_prompt and not prompts:
            raise _fail(where, f"{plugin.name} needs a prompt.", 'add  [prompts]  text = ["..."]  or  prompts = [...]  in this analysis')
    return resolved


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def spec_text(title: str, model: ModelChoice, prompts: list[str], analyses: list[AnalysisSpec]) -> str:
    """TOML that parse_spec reads back into this spec: how a report made in the app says how to rerun it."""
    lines = [f"title = {_toml_value(title)}", f"prompts = {_toml_value(prompts)}", "", "[model]", f"spec = {_toml_value(model.spec)}"]
    if model.bos != "auto":
        lines.append(f"bos = {_toml_value(model.bos)}")
    for analysis in analyses:
        lines += ["", "[[analysis]]", f"plugin = {_toml_value(analysis.plugin)}"]
        if analysis.title:
            lines.append(f"title = {_toml_value(analysis.title)}")
        if analysis.prompts is not None and list(analysis.prompts) != list(prompts):
            lines.append(f"prompts = {_toml_value(analysis.prompts)}")
        if analysis.params:
            lines.append("params = { " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in analysis.params.items()) + " }")
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)
