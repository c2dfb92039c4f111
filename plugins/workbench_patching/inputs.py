"""The clean/corrupted prompt pair, the answer tokens and the metric: checked before any patching.

Every problem is an InputError that shows what the model sees (the tokenisations), because
"the prompts differ in length" is only fixable when you can see which word splits differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.errors import InputError
from workbench.plugin_api import AnalysisContext

METRICS = ("logit-diff", "prob")
SHOWN_TOKENS = 16  # tokens shown per prompt in an error message


def show_tokens(tokens: list[str], limit: int = SHOWN_TOKENS) -> str:
    shown = "|".join(tokens[:limit])
    return shown + ("|…" if len(tokens) > limit else "")


@dataclass(frozen=True)
class PromptPair:
    clean: str
    corrupted: str
    clean_ids: list[int]
    corrupted_ids: list[int]
    clean_str: list[str]
    corrupted_str: list[str]

    @property
    def length(self) -> int:
        return len(self.clean_ids)


def prompt_pair(ctx: AnalysisContext, corrupted: str) -> PromptPair:
    """The clean prompt (the first prompt) and the corrupted one (the parameter, else the second prompt)."""
    clean = ctx.prompt
    clean_ids = ctx.tokens(0)
    if corrupted.strip():
        other = AnalysisContext(ctx.model, [corrupted], prepend_bos=ctx.prepend_bos)
        corrupted_ids = other.tokens(0)
    elif len(ctx.prompts) >= 2:
        corrupted = ctx.prompts[1]
        corrupted_ids = ctx.tokens(1)
    else:
        raise InputError(
            "Activation patching needs a corrupted prompt besides the clean one.",
            "type it in the 'corrupted' field or as the second prompt line (CLI: --param corrupted=TEXT, or a second --prompt)",
        )
    model = ctx.model
    pair = PromptPair(clean, corrupted, clean_ids, corrupted_ids, model.str_tokens(clean_ids), model.str_tokens(corrupted_ids))
    if len(clean_ids) != len(corrupted_ids):
        raise InputError(
            f"The clean prompt is {len(clean_ids)} tokens and the corrupted prompt {len(corrupted_ids)}; patching needs them "
            f"equal, position by position. Clean: {show_tokens(pair.clean_str)}  Corrupted: {show_tokens(pair.corrupted_str)}",
            "change the corrupted prompt so each replaced word takes as many tokens as the one it replaces "
            "(swap a name for a name of the same token count)",
        )
    if clean_ids == corrupted_ids:
        raise InputError(
            "The clean and corrupted prompts are the same tokens, so patching one into the other changes nothing.",
            "change a word of the corrupted prompt (e.g. the subject, or a name)",
        )
    return pair


def answer_token(model, text: str, role: str) -> int:
    """The single token id of an answer as typed (a leading space is part of it)."""
    ids = list(model.tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) != 1:
        pieces = show_tokens(model.str_tokens(ids)) if ids else "no tokens"
        first = f"; its first token is {model.str_tokens(ids[:1])[0]!r}" if len(ids) > 1 else ""
        raise InputError(
            f"The {role} {text!r} is {len(ids)} tokens ({pieces}); the metric needs a single token{first}.",
            f"type a single-token {role} (mind the leading space, as in ' Paris'), or leave it empty to use the top prediction",
        )
    return int(ids[0])


def last_logits(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1].float()


def metric_columns(metric: str, answer: int, wrong: int) -> list[int] | None:
    """The vocabulary columns the metric reads: two for a logit difference, every one (None) for a probability."""
    return [answer, wrong] if metric == "logit-diff" else None


def metric_values(logits: torch.Tensor, metric: str, answer: int, wrong: int) -> torch.Tensor:
    """[batch] metric of the next-token prediction at the last position."""
    last = last_logits(logits)
    if metric == "logit-diff":
        return last[:, answer] - last[:, wrong]
    return torch.softmax(last, dim=-1)[:, answer]

