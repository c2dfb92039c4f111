"""What a causal trace is asked: the prompt's tokens, where the subject sits in them, and the target.

Every check that can fail on user input happens here, before any forward pass,
with a message that names the problem and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.errors import InputError
from workbench.models import LoadedModel


@dataclass(frozen=True)
class TraceRequest:
    token_ids: list[int]  # the prompt, BOS included when the model's convention adds one
    subject_range: tuple[int, int]  # [start, end) token positions of the subject
    target_ids: list[int]  # one or more tokens; several are scored by teacher forcing

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def sequence(self) -> list[int]:
        """The tokens fed to the model: the prompt, then every target token but the last."""
        return self.token_ids + self.target_ids[:-1]


def subject_token_range(model: LoadedModel, prompt: str, token_ids: list[int], subject: str) -> tuple[int, int]:
    """[start, end) of the tokens that spell `subject` inside the prompt (its first occurrence)."""
    if not subject.strip():
        raise InputError("No subject given.", "name the subject as it is written in the prompt, e.g. subject=The Eiffel Tower")
    start_char = prompt.find(subject)
    if start_char < 0:
        folded = prompt.lower().find(subject.lower())
        hint = f"the prompt has {prompt[folded:folded + len(subject)]!r} (case differs)" if folded >= 0 else "copy the subject exactly as it appears in the prompt"
        raise InputError(f"The subject {subject!r} is not in the prompt {prompt!r}.", hint)
    end_char = start_char + len(subject)
    spans = _token_char_spans(model, prompt, token_ids)
    covered = [i for i, (a, b) in enumerate(spans) if b > a and a < end_char and b > start_char]
    if not covered:
        raise InputError(f"The subject {subject!r} covers no token of the prompt.", "check the subject text")
    return covered[0], covered[-1] + 1


def _token_char_spans(model: LoadedModel, prompt: str, token_ids: list[int]) -> list[tuple[int, int]]:
    """Character span of each token of the prompt; (0, 0) for special tokens such as BOS.

    Found by decoding growing prefixes, which works for every tokenizer (offset
    mappings are missing from slow tokenizers and shifted by some normalisers).
    """
    spans = []
    previous = 0
    tokenizer = model.tokenizer
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    plain = [t for t in token_ids if t not in special]
    text_so_far = ""
    index = 0
    for token in token_ids:
        if token in special:
            spans.append((0, 0))
            continue
        index += 1
        text_so_far = tokenizer.decode(plain[:index])
        end = min(len(text_so_far), len(prompt))
        spans.append((previous, end))
        previous = end
    return spans


def resolve_target(model: LoadedModel, prompt: str, token_ids: list[int], target: str) -> list[int]:
    """Target token ids: the model's top next token when `target` is empty, else `target` tokenised.

    A target typed without a leading space after a prompt that does not end in one
    gets the space, since that is how the word would continue the prompt.
    """
    if not target:
        with torch.inference_mode():
            logits = model.engine.run([token_ids], logit_positions=[-1]).logits
        return [int(logits[0, -1].argmax())]
    if not target.strip():
        raise InputError("The target is only whitespace.", "leave it empty to trace the model's own top prediction, or type a word")
    text = target if (target[0].isspace() or prompt.endswith((" ", "\n"))) else " " + target
    ids = model.tokenize(text, prepend_bos=False)
    if not ids:
        raise InputError(f"The target {target!r} has no tokens.", "type a word, or leave the target empty")
    return ids


def build_request(model: LoadedModel, prompt: str, token_ids: list[int], subject: str, target: str, predict: bool = True) -> TraceRequest:
    """predict=False leaves an empty target unpredicted (a one-token stand-in, id 0): what a
    cost estimate needs is the request's shape, not a forward pass (a round trip on NDIF)."""
    n_ctx = model.n_ctx
    subject_range = subject_token_range(model, prompt, token_ids, subject)
    target_ids = resolve_target(model, prompt, token_ids, target) if predict or target else [0]
    if len(token_ids) + len(target_ids) - 1 > n_ctx:
        raise InputError(
            f"The prompt and target take {len(token_ids) + len(target_ids) - 1} tokens; the model's context holds {n_ctx}.",
            "shorten the prompt or the target",
        )
    return TraceRequest(list(token_ids), subject_range, target_ids)
