"""Next-token predictions for a prompt: the token strip and the model's top guesses."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .models import LoadedModel


@dataclass
class Prediction:
    tokens: list[int]
    str_tokens: list[str]
    top: list[tuple[str, int, float]]  # (token text, id, probability)
    prepend_bos: bool

    def to_dict(self) -> dict:
        return {
            "tokens": self.tokens,
            "str_tokens": self.str_tokens,
            "prepend_bos": self.prepend_bos,
            "top": [{"token": t, "id": i, "p": p} for t, i, p in self.top],
        }


@torch.inference_mode()
def predict_next(model: LoadedModel, prompt: str, k: int = 10, prepend_bos: bool | None = None) -> Prediction:
    ids = model.tokenize(prompt, prepend_bos=prepend_bos)
    logits = model.engine.run([ids], logit_positions=[-1]).logits  # any engine (workbench.engines)
    assert logits is not None
    probs = logits[0, -1].float().softmax(-1)
    values, indices = probs.topk(min(k, probs.shape[-1]))
    top = [(model.decode([int(i)]), int(i), float(v)) for v, i in zip(values, indices)]
    used_bos = model.tokenizer_prepends_bos if prepend_bos is None else prepend_bos
    return Prediction(ids, model.str_tokens(ids), top, bool(used_bos))
