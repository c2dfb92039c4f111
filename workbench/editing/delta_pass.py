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
- The later blocks run by hand (workbench.hooks.blocks_by_hand): only at the positions a
  scored one depends on, the last block's queries and MLP only where logits are read, and
  without the bridge's wrapping. Whether that equals the bridge's pass is checked once per
  model and layer on random tokens; where it does not, each step runs the blocks through
  the bridge (logits_from_layer).

The pass that prepares this (the cache and the block's output) runs the positions from the
subject's last token on only up to the edited block: the later blocks are needed there for
the prefix's keys and values alone, and run on the prefix's columns.

This needs the block's output to be the residual before the MLP plus the MLP output
(after attention in a sequential block, the block's input plus attention in a parallel one).
For an architecture where it is not (a norm after the MLP), or where the bridge cannot
reuse keys and values (workbench.hooks.kv_cache), each step runs the whole model with δ
added by a hook, as the reference code does.
"""

from __future__ import annotations

import logging
import weakref

import torch

from ..hooks.blocks_by_hand import BlocksByHand, block_arguments
from ..hooks.keeping import keeping
from ..hooks.kv_cache import KVCacheUnsupported, check_kv_cache, empty_cache, kv_tensors, prefix_cache
from ..hooks.partial_run import logits_from_layer, output_logits, run_blocks, select_hook, skipping_blocks_before
from ..models.shape import residual_before_mlp
from .prompts import padded_batch
from .target import MlpOutput

logger = logging.getLogger(__name__)

# The prefix's keys and values in the blocks after the edited one come from a pass over the
# prefix's columns alone, at least this many of them where the rows are as long. A softmax
# over fewer keys than a CPU vector holds (16 floats with AVX-512) sums them in another
# order; with as many or more the extra keys (later positions, masked) add exact zeros, and
# the cache holds the very numbers a pass over every column gives.
_MIN_PREFIX_COLUMNS = 16

# Blocks by hand run at gathered positions only when there are at least this many: a row of a
# matrix product does not depend on the other rows when there are enough of them (MKL here: 12
# with two threads, 4 with one), so gathering changes no bit; v*'s default 11 prompts and the
# KL prompt make 12 in the last block. Fewer gathered rows would change rounding, and save little.
_MIN_GATHERED_ROWS = 12

# Whether blocks run by hand give a layer's v* pass what the bridge gives: bridge -> {layer: bool}.
_BY_HAND: weakref.WeakKeyDictionary[torch.nn.Module, dict[int, bool]] = weakref.WeakKeyDictionary()
# What a run by hand may differ by from the bridge's, relative to the largest logit or gradient.
_BY_HAND_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
_BY_HAND_HALF_TOLERANCE = 2e-2


class DeltaPass:
    """Call with δ [d_model] to get logits [rows, needed, vocab] at needed_pos [rows, needed]
    (positions in each row's own coordinates; all at or after the row's edit position)."""

    def __init__(self, model, target: MlpOutput, rows: list[list[int]], edit_pos: list[int], needed_pos: torch.Tensor, full_pass: bool = False, by_hand: bool | None = None):
        """by_hand: run the later blocks by hand (None: where that was found to equal the
        bridge's pass; True, False: always, never, for that comparison and the tests)."""
        self.bridge = model.bridge
        self.target = target
        self.device = next(self.bridge.parameters()).device
        self.n_rows = len(rows)
        self.edit_pos = torch.tensor(edit_pos, device=self.device)
        self.needed_pos = needed_pos.to(self.device)
        if (self.needed_pos < self.edit_pos[:, None]).any():
            raise ValueError("a scored position lies before its row's edit position")
        self.rows = rows
        self.model = model
        self.by_hand: BlocksByHand | None = None
        self._hand = by_hand
        self.full_pass = full_pass or not self._prepare_suffix_pass()
        if not self.full_pass and target.layer + 1 < len(self.bridge.blocks) and self.hand:
            self._prepare_by_hand()

    @property
    def hand(self) -> bool:
        """Whether the blocks after the edited one run by hand (probed on first use)."""
        if self._hand is None:
            self._hand = _by_hand_holds(self.model, self.target)
        return self._hand

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
        n_blocks = len(bridge.blocks)
        # The passes are for the cache and the block's output: neither runs the final norm and
        # the unembedding. Every column up to the edited block: its output from the edit column
        # on is where the steps start, and the cache of the blocks up to it.
        early = empty_cache()
        with torch.no_grad(), bridge.hooks(fwd_hooks=[(name, keeping(kept, name)) for name in names]):
            if layer + 1 < n_blocks:
                bridge(ids, past_key_values=early, attention_mask=mask, position_ids=positions, stop_at_layer=layer + 1, return_type=None)
            else:
                run_blocks(bridge, ids, past_key_values=early, attention_mask=mask, position_ids=positions, return_type=None)
        if set(kept) != set(names):
            return False
        try:
            kv = kv_tensors(early)[: layer + 1]
            if first and layer + 1 < n_blocks:
                kv += self._prefix_later_blocks(kept[post_name], mask, positions, max(first, min(width, _MIN_PREFIX_COLUMNS)))
        except KVCacheUnsupported:
            return False
        if len(kv) != (n_blocks if first else layer + 1) or any(keys.shape[2] < first for keys, _ in kv):
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

    def _prefix_later_blocks(self, block_output: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, columns: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The keys and values of the blocks after the edited one, from a pass over the first
        `columns` columns alone: by hand where the steps run so, each MLP at the real (not
        padding) positions and none in the last block, whose output nothing reads."""
        bridge, start = self.bridge, self.target.layer + 1
        late = empty_cache()
        kwargs = {"past_key_values": late, "attention_mask": mask[:, :columns], "position_ids": positions[:, :columns]}
        found = block_arguments(bridge, start, block_output[:, :columns], **kwargs) if self.hand else None
        with torch.no_grad():
            if found is not None:
                BlocksByHand(bridge, start, *found).fill_cache(block_output[:, :columns], late, _gathered(mask[:, :columns].bool()))
            else:
                with skipping_blocks_before(bridge, start):
                    run_blocks(bridge, block_output[:, :columns], start_at_layer=start, return_type=None, **kwargs)
        return kv_tensors(late, start=start)

    def _select(self, needed: torch.Tensor):
        def select(normed: torch.Tensor) -> torch.Tensor:
            return normed.gather(1, needed[..., None].expand(-1, -1, normed.shape[-1]))

        return select

    def _suffix_kwargs(self, cache) -> dict:
        return {"past_key_values": cache, "attention_mask": self.mask, "position_ids": self.suffix_positions}

    def _prepare_by_hand(self) -> None:
        start = self.target.layer + 1
        # A cache even without a prefix: the blocks append to the one they are handed.
        found = block_arguments(self.bridge, start, self.block_output, **self._suffix_kwargs(prefix_cache(self.kv, self.first) or empty_cache()))
        if found is None:
            return
        self.by_hand = BlocksByHand(self.bridge, start, *found)
        # The positions the blocks run at: up to each row's last scored position (nothing later
        # in a row reaches a scored one), and the last block's output only at the scored ones.
        n_rows, width = self.block_output.shape[:2]
        columns = torch.arange(width, device=self.device)
        upto = columns[None, :] <= self.needed_local.max(dim=1).values[:, None]
        scored = torch.zeros(n_rows, width, dtype=torch.bool, device=self.device)
        scored[torch.arange(n_rows, device=self.device)[:, None], self.needed_local] = True
        self.kept, self.scored = _gathered(upto), _gathered(scored)

    def _from_edit(self, delta: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(self.n_rows, device=self.device)
        column = torch.zeros(self.n_rows, dtype=torch.long, device=self.device)
        entering = self.block_output.index_put((rows, column), delta.to(self.block_output.dtype), accumulate=True)
        start = self.target.layer + 1
        if self.by_hand is not None:
            leaving = self.by_hand.run(entering, prefix_cache(self.kv, self.first) or empty_cache(), self.kept, self.scored)
            return output_logits(self.bridge, self.bridge.unembed(self._select(self.needed_local)(self.bridge.ln_final(leaving))))
        extra = {}
        if start < len(self.bridge.blocks):
            extra = self._suffix_kwargs(prefix_cache(self.kv, self.first))
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


def _gathered(where: torch.Tensor) -> torch.Tensor | None:
    """The positions [batch * pos] where blocks run by hand run (None: all of them)."""
    count = int(where.sum())
    return None if count == where.numel() or count < _MIN_GATHERED_ROWS else where.reshape(-1).nonzero().squeeze(1)


# -- whether the blocks may run by hand ----------------------------------------------------


def _by_hand_holds(model, target: MlpOutput) -> bool:
    """Whether blocks run by hand give this layer's v* pass what the bridge gives (probed
    once per model and layer)."""
    results = _BY_HAND.setdefault(model.bridge, {})
    if target.layer not in results:
        results[target.layer] = _probe_by_hand(model, target)
    return results[target.layer]


def _probe_by_hand(model, target: MlpOutput) -> bool:
    """Logits and δ's gradient of a pass on random tokens, by hand and through the bridge;
    rows read at their last position, at their edit position, and one at its edit position
    alone (as v*'s KL prompt), so that MLPs are left out in both ways; the rows' lengths
    differ, so that the prefix's pass by hand leaves out padding. It costs about as much as
    three v* steps (small passes stream every weight all the same)."""
    bridge = model.bridge
    device = next(bridge.parameters()).device
    generator = torch.Generator().manual_seed(0)
    lengths, edits = (9, 7, 8, 6), (3, 1, 4, 2)
    rows = [torch.randint(0, int(bridge.cfg.d_vocab), (n,), generator=generator).tolist() for n in lengths]
    needed = torch.tensor([[n - 1, e] for n, e in zip(lengths, edits)])
    needed[1] = edits[1]
    delta = torch.randn(int(bridge.cfg.d_model), generator=generator)
    weights = torch.randn(len(rows), 2, int(bridge.cfg.d_vocab), generator=generator).to(device)
    try:
        by_hand = DeltaPass(model, target, rows, list(edits), needed, by_hand=True)
        if by_hand.full_pass or by_hand.by_hand is None:
            return False
        results = []
        with torch.enable_grad():
            for delta_pass in (by_hand, DeltaPass(model, target, rows, list(edits), needed, by_hand=False)):
                d = delta.to(device).requires_grad_(True)
                logits = delta_pass(d).float()
                (gradient,) = torch.autograd.grad((logits.log_softmax(-1) * weights).sum(), d)
                results.append((logits.detach(), gradient))
    except Exception as exc:  # noqa: BLE001 - any failure by hand means: use the bridge
        logger.info("ROME's v* search runs the blocks through the bridge: running them by hand failed (%s)", exc)
        return False
    tolerance = _BY_HAND_TOLERANCE.get(next(bridge.parameters()).dtype, _BY_HAND_HALF_TOLERANCE)
    for got, expected in zip(results[0], results[1]):
        scale = float(expected.abs().max().clamp(min=1e-6))
        if got.shape != expected.shape or not bool(torch.isfinite(got).all()) or float((got - expected).abs().max()) > tolerance * scale:
            logger.info("ROME's v* search runs the blocks through the bridge: by hand, they differ from it on this model")
            return False
    return True
