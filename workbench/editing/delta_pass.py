"""The forward pass of ROME's v* search: logits as a function of δ, the change made to
one MLP output at each prompt's last subject token.

Every step of the search runs the model on a dozen prompts, forward and backward, and
only that MLP output changes between steps. So:

- Nothing before the edited block's output changes: the residual leaving the block is
  computed once, and each step starts at the next block (workbench.hooks.partial_run).
- Nothing before the last subject token changes either. The rows are aligned on that
  token (left padding, with the attention mask and positions that make padding
  invisible), the keys and values of the positions before it are computed once, and
  each step runs only the positions from it on.
- Only the positions whose logits are scored are projected onto the vocabulary.

This needs the block's output to be the residual before the MLP plus the MLP output
(after attention in a sequential block, the block's input plus attention in a parallel one).
For an architecture where it is not (a norm after the MLP), or where the bridge cannot
reuse keys and values (workbench.hooks.kv_cache), each step runs the whole model with δ
added by a hook, as the reference code does.
"""

from __future__ import annotations

import logging

import torch

from ..hooks.keeping import keeping
from ..hooks.kv_cache import KVCacheUnsupported, check_kv_cache, logits_and_cache, prefix_cache
from ..hooks.partial_run import logits_from_layer, select_hook
from ..models.shape import residual_before_mlp
from .prompts import padded_batch
from .target import MlpOutput

logger = logging.getLogger(__name__)


class DeltaPass:
    """Call with δ [d_model] to get logits [rows, needed, vocab] at needed_pos [rows, needed]
    (positions in each row's own coordinates; all at or after the row's edit position)."""

    def __init__(self, model, target: MlpOutput, rows: list[list[int]], edit_pos: list[int], needed_pos: torch.Tensor, full_pass: bool = False):
        self.bridge = model.bridge
        self.target = target
        self.device = next(self.bridge.parameters()).device
        self.n_rows = len(rows)
        self.edit_pos = torch.tensor(edit_pos, device=self.device)
        self.needed_pos = needed_pos.to(self.device)
        if (self.needed_pos < self.edit_pos[:, None]).any():
            raise ValueError("a scored position lies before its row's edit position")
        self.rows = rows
        self.full_pass = full_pass or not self._prepare_suffix_pass()

    def __call__(self, delta: torch.Tensor) -> torch.Tensor:
        return self._whole_model(delta) if self.full_pass else self._from_edit(delta)

    # -- the fast path ---------------------------------------------------------------

    def _prepare_suffix_pass(self) -> bool:
        bridge, layer = self.bridge, self.target.layer
        try:
            check_kv_cache(bridge)
        except KVCacheUnsupported as exc:
            logger.warning("ROME's v* search runs the whole model on every step: %s", exc)
            return False
        first = int(self.edit_pos.max())  # the column every row's edit position moves to
        shifts = [first - int(e) for e in self.edit_pos]
        width = first + max(len(row) - int(e) for row, e in zip(self.rows, self.edit_pos))
        ids = torch.zeros(self.n_rows, width, dtype=torch.long)
        mask = torch.zeros(self.n_rows, width, dtype=torch.long)
        positions = torch.ones(self.n_rows, width, dtype=torch.long)
        for r, (row, shift) in enumerate(zip(self.rows, shifts)):
            ids[r, shift : shift + len(row)] = torch.tensor(row)
            mask[r, shift : shift + len(row)] = 1
            positions[r, shift : shift + len(row)] = torch.arange(len(row))
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        before_mlp = residual_before_mlp(bridge, layer)
        post_name = f"blocks.{layer}.hook_resid_post"
        names = [*before_mlp, self.target.value_hook, post_name]
        kept: dict[str, torch.Tensor] = {}
        # The pass is for the cache and the block's output; its logits are not used, so only
        # the last position is projected onto the vocabulary (all of them cost several blocks).
        hooks = [(name, keeping(kept, name)) for name in names] + [select_hook(lambda normed: normed[:, -1:])]
        with torch.no_grad(), bridge.hooks(fwd_hooks=hooks):
            _, kv = logits_and_cache(bridge, ids, attention_mask=mask, position_ids=positions)
        if set(kept) != set(names) or kv is None:
            return False
        real = mask.bool()
        before = sum(kept[name][real] for name in before_mlp)
        out, post = kept[self.target.value_hook][real], kept[post_name][real]
        # δ added to the MLP output reaches the block's output unchanged only when the output
        # is (residual before the MLP) + (MLP output): not so with a norm after the MLP.
        if not torch.allclose(before + out, post, atol=1e-5, rtol=1e-4):
            return False
        self.first = first
        self.mask = mask
        self.suffix_positions = positions[:, first:]
        self.block_output = kept[post_name][:, first:]
        self.kv = kv
        self.needed_local = self.needed_pos - self.edit_pos[:, None]
        return True

    def _select(self, needed: torch.Tensor):
        def select(normed: torch.Tensor) -> torch.Tensor:
            return normed.gather(1, needed[..., None].expand(-1, -1, normed.shape[-1]))

        return select

    def _from_edit(self, delta: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(self.n_rows, device=self.device)
        column = torch.zeros(self.n_rows, dtype=torch.long, device=self.device)
        entering = self.block_output.index_put((rows, column), delta.to(self.block_output.dtype), accumulate=True)
        start = self.target.layer + 1
        extra = {}
        if start < len(self.bridge.blocks):
            extra = {"past_key_values": prefix_cache(self.kv, self.first), "attention_mask": self.mask, "position_ids": self.suffix_positions}
        return logits_from_layer(self.bridge, entering, start, select=self._select(self.needed_local), **extra)

    # -- the whole model, δ added by a hook ---------------------------------------------

    def _whole_model(self, delta: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(self.n_rows, device=self.device)

        def add_delta(out, hook):
            bumped = out.clone()
            bumped[rows, self.edit_pos] = bumped[rows, self.edit_pos] + delta.to(out.dtype)
            return bumped

        select = self._select(self.needed_pos)
        hooks = [(self.target.value_hook, add_delta), select_hook(select)]
        with self.bridge.hooks(fwd_hooks=hooks):
            return self.bridge(padded_batch(self.rows).to(self.device), return_type="logits")
