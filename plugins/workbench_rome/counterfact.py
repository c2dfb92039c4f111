"""Reading CounterFact-format records (Meng et al. 2022) into edit requests and probes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from workbench.editing.prompts import EditRequest
from workbench.errors import InputError

HINT = "give a JSON list of records with requested_rewrite {prompt, subject, target_new {str}, target_true {str}}, paraphrase_prompts and neighborhood_prompts"


@dataclass
class Case:
    case_id: object
    request: EditRequest
    paraphrases: list
    neighbours: list
    generation_prompts: list


def load_cases(path: str | Path) -> list[Case]:
    path = Path(str(path)).expanduser()
    if not str(path) or not path.is_file():
        raise InputError(f"The dataset file {path} does not exist.", "give a CounterFact-format JSON file (param dataset=FILE.json)")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path.name} is not valid JSON: {exc}", HINT) from None
    if not isinstance(records, list) or not records:
        raise InputError(f"{path.name} is not a non-empty list of CounterFact records.", HINT)
    return [_case(record, index, path.name) for index, record in enumerate(records)]


def _case(record, index: int, file_name: str) -> Case:
    """One record, checked field by field; an error names the record and the field."""
    where = f"Record {index} of {file_name}"
    if not isinstance(record, dict):
        raise InputError(f"{where} is {_a(type(record).__name__)}, not a JSON object.", HINT)
    if "case_id" in record:
        where = f"Record {index} (case_id {record['case_id']!r}) of {file_name}"
    rewrite = record.get("requested_rewrite")
    if not isinstance(rewrite, dict):
        raise InputError(f"{where}: requested_rewrite is {_missing_or_type(rewrite)}, not an object.", HINT)
    template = _text(rewrite, "prompt", where, "requested_rewrite.prompt")
    subject = _text(rewrite, "subject", where, "requested_rewrite.subject")
    targets = []
    for key in ("target_new", "target_true"):
        value = rewrite.get(key)
        if not isinstance(value, dict):
            raise InputError(f"{where}: requested_rewrite.{key} is {_missing_or_type(value)}, not an object {{\"str\": ...}}.", HINT)
        targets.append(_text(value, "str", where, f"requested_rewrite.{key}.str"))
    if "{}" not in template:
        raise InputError(f"{where}: requested_rewrite.prompt {template!r} has no {{}} where the subject goes.", HINT)
    lists = {key: _texts(record, key, where) for key in ("paraphrase_prompts", "neighborhood_prompts", "generation_prompts")}
    return Case(
        case_id=record.get("case_id", index),
        request=EditRequest(template=template, subject=subject, target_new=targets[0], target_true=targets[1]),
        paraphrases=lists["paraphrase_prompts"],
        neighbours=lists["neighborhood_prompts"],
        generation_prompts=lists["generation_prompts"],
    )


def _missing_or_type(value) -> str:
    return "missing" if value is None else _a(type(value).__name__)


def _a(name: str) -> str:
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _text(mapping: dict, key: str, where: str, field: str) -> str:
    value = mapping.get(key)
    if not isinstance(value, str):
        raise InputError(f"{where}: {field} is {_missing_or_type(value)}, not a string.", HINT)
    if not value.strip():
        raise InputError(f"{where}: {field} is empty.", HINT)
    return value


def _texts(record: dict, key: str, where: str) -> list[str]:
    """An optional list of prompts; a bare string would read as one prompt per character."""
    value = record.get(key, [])
    if not isinstance(value, list):
        raise InputError(f"{where}: {key} is {_a(type(value).__name__)}, not a list of strings.", f"write it as [\"...\", ...]; {HINT}")
    for number, item in enumerate(value):
        if not isinstance(item, str):
            raise InputError(f"{where}: {key}[{number}] is {_a(type(item).__name__)}, not a string.", HINT)
    return list(value)
