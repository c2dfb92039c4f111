"""Requests and their tokens: where the subject's last token is, the target's token ids,
and teacher-forced batches of right-padded prompts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ..engines import BridgeEngine
from ..engines.base import RankOneEdit, RunRequest, TokenChoice, TokenScores
from ..errors import InputError
from ..hooks.partial_run import select_hook


@dataclass
class EditRequest:
    template: str  # the prompt with {} where the subject goes
    subject: str
    target_new: str
    target_true: str = ""

    @property
    def prompt(self) -> str:
        return self.template.replace("{}", self.subject, 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EditRequest:
        return cls(**{k: data.get(k, "") for k in ("template", "subject", "target_new", "target_true")})


def make_request(subject: str, target_new: str, template: str = "", prompt: str = "", target_true: str = "") -> EditRequest:
    """A checked request; without a template, the subject is found in the prompt and replaced by {}."""
    subject = (subject or "").strip()
    if not subject:
        raise InputError("The subject is empty.", "name the subject whose fact you edit, e.g. subject=Eiffel Tower")
    if not template:
        if not prompt:
            raise InputError("There is no prompt to edit.", "give a template with {} for the subject, or type a prompt that contains the subject")
        if subject not in prompt:
            raise InputError(f"The subject {subject!r} is not in the prompt {prompt!r}.", "type the subject exactly as it appears in the prompt")
        template = prompt.replace(subject, "{}", 1)
    elif "{}" not in template:
        raise InputError(f"The template {template!r} has no {{}} for the subject.", "write the prompt with {} where the subject goes, e.g. '{} is located in the city of'")
    if not (target_new or "").strip():
        raise InputError("The new target is empty.", "give the new object, e.g. target_new=Rome")
    return EditRequest(template=template, subject=subject, target_new=target_new, target_true=target_true or "")


def encode(model, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids as model.tokenize gives them, with each token's character span in text."""
    ids = model.tokenize(text)
    encoded = model.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    raw_ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    # model.tokenize adds or drops one BOS against the tokenizer's own output; mirror that.
    if len(ids) == len(raw_ids) + 1:
        offsets = [(0, 0)] + offsets
    elif len(ids) == len(raw_ids) - 1:
        offsets = offsets[1:]
    if len(offsets) != len(ids):
        raise InputError(f"{model.name}'s tokenizer gives no character offsets for {text!r}.", "ROME needs a fast (Rust) tokenizer")
    return ids, offsets


def last_subject_token(model, text: str, subject_end: int) -> tuple[list[int], int]:
    """(ids of text, index of the token holding character subject_end - 1)."""
    ids, offsets = encode(model, text)
    for index, (start, end) in enumerate(offsets):
        if start < subject_end <= end or (start <= subject_end - 1 < end):
            return ids, index
    raise InputError(f"Could not find the subject's last token in {text!r}.", "check that the subject is spelled as in the prompt")


def subject_span(model, text: str, subject_start: int, subject_end: int) -> tuple[list[int], int, int]:
    """(ids, first subject token, one past the last subject token) of text."""
    ids, offsets = encode(model, text)
    inside = [i for i, (s, e) in enumerate(offsets) if e > subject_start and s < subject_end and e > s]
    if not inside:
        raise InputError(f"Could not find the subject in the tokens of {text!r}.", "check the subject's spelling")
    return ids, inside[0], inside[-1] + 1


def target_text(prompt: str, target: str) -> str:
    """CounterFact targets come without their leading space; the token after a prompt has one."""
    if target and not target[0].isspace() and prompt and not prompt[-1].isspace():
        return " " + target
    return target


def target_ids(model, prompt: str, target: str) -> list[int]:
    ids = list(model.tokenizer(target_text(prompt, target), add_special_tokens=False)["input_ids"])
    if not ids:
        raise InputError(f"The target {target!r} has no tokens.", "give a non-empty target")
    return ids


def padded_batch(sequences: list[list[int]], pad: int = 0) -> torch.Tensor:
    """Right-padded ids: with causal attention the padding never changes earlier positions."""
    width = max(len(s) for s in sequences)
    return torch.tensor([list(s) + [pad] * (width - len(s)) for s in sequences], dtype=torch.long)


def shared_rows(sequences: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """(rows, host): the fewest rows that contain every sequence as a beginning, and the row
    holding each sequence. With causal attention a row's first positions give the logits of
    any sequence it begins with."""
    rows: list[list[int]] = []
    host = [0] * len(sequences)
    for index in sorted(range(len(sequences)), key=lambda i: -len(sequences[i])):
        sequence = sequences[index]
        for r, row in enumerate(rows):
            if row[: len(sequence)] == sequence:
                host[index] = r
                break
        else:
            host[index] = len(rows)
            rows.append(list(sequence))
    return rows, host


def _teacher_forced(model, prompts: list[str], targets: list[str]) -> tuple[list[list[int]], list[list[int]], list[list[int]], list[int], list[int]]:
    """(prompt ids, target ids, rows, host, first) of pairs scored teacher-forced: the rows
    (shared_rows) and, per row, the earliest position that predicts a target token."""
    ids = [model.tokenize(p) for p in prompts]
    tids = [target_ids(model, p, t) for p, t in zip(prompts, targets)]
    rows, host = shared_rows([list(i) + list(t[:-1]) for i, t in zip(ids, tids)])
    first = [len(row) for row in rows]
    for pair, r in enumerate(host):
        first[r] = min(first[r], len(ids[pair]) - 1)
    return ids, tids, rows, host, first


@torch.no_grad()
def target_probabilities(model, prompts: list[str], targets: list[str], batch: int = 16, edits: Sequence[RankOneEdit] = ()) -> list[float]:
    """P(target | prompt) of each pair: the product of its teacher-forced token probabilities.

    Pairs share a pass where one's teacher-forced tokens (prompt + target[:-1]) begin
    another's (shared_rows): a prompt's new and true targets cost one row, not two, when
    one of them is a single token. Only the positions that predict a target token are
    projected onto the vocabulary, which costs as much as several blocks per position.
    `edits` (RankOneEdits, applied as interventions) and engines other than TransformerBridge
    take the engine's path: every pass in one `run_many` (one job on NDIF), and only the
    scored tokens' log-probabilities come back (TokenScores).
    """
    if edits or not isinstance(model.engine, BridgeEngine):
        return _engine_target_probabilities(model, prompts, targets, batch, edits)
    device = next(model.bridge.parameters()).device
    ids, tids, rows, host, first = _teacher_forced(model, prompts, targets)
    out = [0.0] * len(prompts)
    for start in range(0, len(rows), batch):
        chunk = range(start, min(start + batch, len(rows)))
        width = max(len(rows[r]) - first[r] for r in chunk)
        needed = torch.tensor([[min(first[r] + j, len(rows[r]) - 1) for j in range(width)] for r in chunk], device=device)
        select = select_hook(lambda normed: normed.gather(1, needed[..., None].expand(-1, -1, normed.shape[-1])))
        with model.bridge.hooks(fwd_hooks=[select]):
            log_probs = torch.log_softmax(model.bridge(padded_batch([rows[r] for r in chunk]).to(device)).float(), dim=-1)
        for pair, r in enumerate(host):
            if r in chunk:
                offset = len(ids[pair]) - 1 - first[r]
                picked = (log_probs[r - start, offset + j, t] for j, t in enumerate(tids[pair]))
                out[pair] = float(torch.exp(sum(picked, log_probs.new_zeros(()))))
    return out


def _engine_target_probabilities(model, prompts: list[str], targets: list[str], batch: int, edits: Sequence[RankOneEdit]) -> list[float]:
    ids, tids, rows, host, _ = _teacher_forced(model, prompts, targets)
    requests, owners = [], []
    for start in range(0, len(rows), batch):
        chunk = list(range(start, min(start + batch, len(rows))))
        pairs = [(pair, j, t) for pair, r in enumerate(host) if r in chunk for j, t in enumerate(tids[pair])]
        scores = TokenScores(
            rows=torch.tensor([host[pair] - start for pair, _, _ in pairs]),
            positions=torch.tensor([len(ids[pair]) - 1 + j for pair, j, _ in pairs]),
            tokens=torch.tensor([t for _, _, t in pairs]),
        )
        requests.append(RunRequest(padded_batch([rows[r] for r in chunk]), logits=False, edits=tuple(edits), scores=scores))
        owners.append(torch.tensor([pair for pair, _, _ in pairs], dtype=torch.long))
    totals = torch.zeros(len(prompts), dtype=torch.float32)
    with torch.inference_mode():
        for run, owner in zip(model.engine.run_many(requests), owners):
            assert run.scores is not None
            totals.index_add_(0, owner, run.scores.float().cpu())
    return [float(torch.exp(total)) for total in totals]


@torch.no_grad()
def greedy_continuation(model, prompt: str, n_tokens: int, edits: Sequence[RankOneEdit] = ()) -> str:
    """The model's greedy continuation of prompt (no KV cache: short texts, small models),
    with `edits` applied as interventions; every token in one engine call (one NDIF job)."""
    ids = model.tokenize(prompt)
    eos = getattr(model.tokenizer, "eos_token_id", None)
    n_tokens = min(n_tokens, model.n_ctx - len(ids))
    if n_tokens <= 0:
        return model.decode([])
    new = model.engine.extend([ids], n_tokens, TokenChoice(stop_token=eos), edits)[0, len(ids) :].tolist()
    if eos in new:
        new = new[: new.index(eos)]
    return model.decode(new)
