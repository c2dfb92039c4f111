"""Logit lens: decode every layer's residual stream with the model's own final norm, unembedding and logit transform (Gemma 2's soft cap).

Written against the engine seam (ctx.activations, ctx.engine.decode_residual), so it runs on every engine."""

from __future__ import annotations

import numpy as np
import torch

from workbench.engines import Decode
from workbench.engines.base import decoded
from workbench.plugin_api import AnalysisContext, Cost, Progress

from .result import LogitLensResult


def run(ctx: AnalysisContext, top_k: int = 5, include_embeddings: bool = True):
    model = ctx.model
    n_layers = model.n_layers
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]
    if include_embeddings:
        hooks = ["blocks.0.hook_resid_pre"] + hooks
    yield Progress(0, len(hooks) + 1, "reading the residual stream")
    tokens = ctx.tokens()
    if ctx.engine.remote:
        top_ids, top_probs, target_probs, final_top = _decoded_remotely(ctx.engine, tokens, hooks, top_k)
    else:
        top_ids, top_probs, target_probs, final_top = yield from _decoded_here(ctx, hooks, top_k)
    decode = model.token_text  # byte pieces of a character as <0xE2>, not a row of "\ufffd"
    top_ids_arr = np.stack(top_ids).astype(np.int64)
    return LogitLensResult(
        layer_names=["embed" if n.endswith("resid_pre") else f"L{n.split('.')[1]}" for n in hooks],
        tokens=[int(t) for t in tokens],
        str_tokens=model.str_tokens(tokens),
        final_top_tokens=[decode(int(i)) for i in final_top.tolist()],
        p_final_top=np.stack(target_probs).astype(np.float32),
        top_ids=top_ids_arr,
        top_probs=np.stack(top_probs).astype(np.float32),
        top_strings=[[decode(int(i)) for i in row[:, 0]] for row in top_ids_arr],
        top_k_strings=[[[decode(int(i)) for i in ranks] for ranks in row] for row in top_ids_arr],
    )


def _decoded_here(ctx: AnalysisContext, hooks: list[str], top_k: int):
    """Generator: the readouts from residuals read here (or from the store), decoded here;
    returns (top ids, top probabilities, P(final top) per layer, final top token per position)."""
    engine = ctx.engine
    top_ids, top_probs, target_probs = [], [], []
    with torch.inference_mode():
        acts = ctx.activations(hooks)
        final = torch.as_tensor(acts[hooks[-1]], device=ctx.device)
        final_logits = engine.decode_residual(final[None])
        for step, name in enumerate(hooks, start=1):
            resid = torch.as_tensor(acts[name], device=ctx.device, dtype=final.dtype)
            answer = decoded(engine.decode_residual(resid[None]), final_logits, top_k)  # as a Decode gives it where the model runs
            top_ids.append(answer.top_ids[0].cpu().numpy())
            top_probs.append(answer.top_probs[0].cpu().numpy())
            target_probs.append(answer.model_top_probs[0].cpu().numpy())
            yield Progress(step, len(hooks) + 1, f"decoded {name}")
        final_top = final_logits[0].argmax(-1)
    return top_ids, top_probs, target_probs, final_top.cpu().numpy()


def _decoded_remotely(engine, tokens: list[int], hooks: list[str], top_k: int):
    """The same readouts from one run where the model is (NDIF): the output head's weights
    are there, so each residual is decoded there and only its top tokens come back."""
    out = engine.run([tokens], decode={name: Decode(None, top_k) for name in hooks}, logits=False)
    answers = [out.decoded[name] for name in hooks]
    top_ids = [a.top_ids[0].cpu().numpy() for a in answers]
    top_probs = [a.top_probs[0].cpu().numpy() for a in answers]
    target_probs = [a.model_top_probs[0].cpu().numpy() for a in answers]
    return top_ids, top_probs, target_probs, top_ids[-1][:, 0]


def cost(ctx: AnalysisContext, top_k: int = 5, include_embeddings: bool = True) -> Cost:
    """One forward pass, then every layer's residual read out through the unembedding."""
    model, tokens = ctx.model, len(ctx.tokens(0))
    readouts = model.n_layers + int(include_embeddings)
    return Cost(((1, tokens),), "tokens (forward) + layers × tokens × vocabulary (readouts)", extra_flops=2.0 * readouts * tokens * int(model.cfg.d_model) * int(model.cfg.d_vocab))
