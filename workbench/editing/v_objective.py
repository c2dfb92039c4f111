"""ROME's v* objective, as `Engine.fit_delta` minimises it on any engine.

The loss of δ (added to the MLP output at each prompt's last subject token) is the new
target's NLL over the prefixed prompts, a KL term that keeps the next-token distribution
after "{subject} is a" as it was, and a norm penalty; after each step δ's norm is clamped.
It is one object for the bridge's fast pass and for an nnsight session (which carries it
to NDIF by value), so the loss is written once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class VObjective:
    """logits [rows, needed, vocab]: rows 0..n_ctx-1 are the prefixed prompts, scored at
    their target tokens (pred_tok, mask [n_ctx, needed]); the rows after them are the KL
    prompts, read at their first needed position."""

    n_ctx: int
    pred_tok: torch.Tensor
    mask: torch.Tensor
    kl_factor: float
    weight_decay: float
    v0_norm: float
    max_norm: float
    early_stop_loss: float
    kl_init: torch.Tensor | None = None  # the KL rows' log-probabilities at step 0 (δ = 0)

    def loss(self, logits: torch.Tensor, delta: torch.Tensor, step: int) -> tuple[torch.Tensor, list[float], bool]:
        """(loss, [total, target NLL, KL, norm penalty, mean P(target)], stop?)."""
        device = logits.device
        logits = logits.float()
        n_ctx, width = self.pred_tok.shape
        pred_tok, mask = self.pred_tok.to(device), self.mask.to(device)
        log_probs = torch.log_softmax(logits[:n_ctx], dim=-1)
        picked = log_probs[torch.arange(n_ctx, device=device)[:, None], torch.arange(width, device=device), pred_tok] * mask
        nll_each = -picked.sum(1) / mask.sum(1)
        nll = nll_each.mean()
        kl_logp = torch.log_softmax(logits[n_ctx:, 0], dim=-1)
        if self.kl_init is None:
            self.kl_init = kl_logp.detach().clone()
        kl = self.kl_factor * torch.nn.functional.kl_div(kl_logp, self.kl_init, log_target=True, reduction="batchmean")
        decay = self.weight_decay * (delta.norm() / torch.tensor(self.v0_norm, device=device) ** 2)
        loss = nll + kl + decay
        record = [float(loss.detach()), float(nll.detach()), float(kl.detach()), float(decay.detach()), float(torch.exp(-nll_each.detach()).mean())]
        return loss, record, record[0] < self.early_stop_loss

    def constrain(self, delta: torch.Tensor) -> None:
        if delta.norm() > self.max_norm:
            delta.mul_(self.max_norm / delta.norm())
