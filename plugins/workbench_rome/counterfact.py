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
    cases = []
    for index, record in enumerate(records):
        try:
            rewrite = record["requested_rewrite"]
            template, subject = rewrite["prompt"], rewrite["subject"]
            new, true = rewrite["target_new"]["str"], rewrite["target_true"]["str"]
            paraphrases = list(record.get("paraphrase_prompts", []))
            neighbours = list(record.get("neighborhood_prompts", []))
        except (KeyError, TypeError):
            raise InputError(f"Record {index} of {path.name} is not in CounterFact format.", HINT) from None
        if "{}" not in template or not subject or not str(new).strip() or not str(true).strip():
            raise InputError(f"Record {index} of {path.name} has no {{}} in its prompt, or an empty subject or target.", HINT)
        cases.append(
            Case(
                case_id=record.get("case_id", index),
                request=EditRequest(template=template, subject=subject, target_new=new, target_true=true),
                paraphrases=[str(p) for p in paraphrases],
                neighbours=[str(p) for p in neighbours],
                generation_prompts=[str(p) for p in record.get("generation_prompts", [])],
            )
        )
    return cases
