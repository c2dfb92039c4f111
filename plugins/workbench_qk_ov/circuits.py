"""The circuit math of "A Mathematical Framework for Transformer Circuits" (Elhage et al. 2021).

Row-vector convention throughout, as in TransformerLens: a residual vector x is a row,
W_Q, W_K, W_V are [d_model, d_head], W_O is [d_head, d_model], W_E is [vocab, d_model]
and W_U is [d_model, vocab].

- QK circuit of a head: W_QK = W_Q W_Kᵀ (d_model × d_model, rank ≤ d_head); the full QK
  circuit W_E W_QK W_Eᵀ gives the attention score of a query token (row) for a key token
  (column).
- OV circuit: W_OV = W_V W_O; the full OV circuit W_E W_OV W_U gives how attending to a
  token (row) changes the logit of each output token (column).

Nothing here builds a vocab × vocab matrix: restricted circuits multiply only the rows
and columns asked for, spectra come from the d_head × d_head "BA" side of the factored
product (the non-zero eigenvalues of AB and BA are the same), and the self-top fraction
walks the vocabulary in row chunks and column blocks.

Layer norms. With `fold_ln=True` the weights are processed the way TransformerLens'
`enable_compatibility_mode()` (HookedTransformer's defaults fold_ln, center_writing_weights,
center_unembed) processes them, but on copies, so the shared model is left untouched:

- each norm's scale γ (1 + γ for offset RMSNorms, as Gemma stores it) is multiplied into
  the weights that read its output: W_Q, W_K, W_V by ln1's, W_U by the final norm's;
- LayerNorm (not RMSNorm) also subtracts the mean over d_model. That centering is the
  projection P = I − 11ᵀ/d_model; it is applied to the weights that write to the residual
  stream (W_E, W_pos, W_O) and to those that read it (W_Q, W_K, W_V, W_U); P is idempotent,
  so the circuits equal those of the model with its centering in place;
- W_U is centred over the vocabulary (each OV row shifts by a constant, which softmax
  ignores: the argmax, hence the self-top fraction, is unchanged, but the spectrum is the
  one of the logit differences that matter).

What weight-only circuits leave out, in every mode: the norms' division by the residual's
scale (one number per position), all biases, the 1/√d_head attention scale, and rotary
position embeddings (on RoPE models a query at position m and a key at n meet through a
rotation by n − m, so the token-token QK map is exact only at equal positions).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from transformer_lens.FactoredMatrix import FactoredMatrix

COMPOSITION_MODES = ("q", "k", "v")


@dataclass
class CircuitWeights:
    """One model's attention weights in one basis (raw, or with the norms folded in).

    W_K and W_V keep one entry per key/value head (grouped-query attention); query head h
    reads key/value head `kv_head(h)`.
    """

    W_E: torch.Tensor  # [vocab, d_model]
    W_U: torch.Tensor  # [d_model, vocab]
    W_pos: torch.Tensor | None  # [n_ctx, d_model]; None without learned absolute positions
    W_Q: torch.Tensor  # [layer, head, d_model, d_head]
    W_K: torch.Tensor  # [layer, kv_head, d_model, d_head]
    W_V: torch.Tensor  # [layer, kv_head, d_model, d_head]
    W_O: torch.Tensor  # [layer, head, d_head, d_model]
    fold_ln: bool
    positional_embedding_type: str  # "standard" (learned), "rotary", ...

    @property
    def n_layers(self) -> int:
        return int(self.W_Q.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.W_Q.shape[1])

    @property
    def n_kv_heads(self) -> int:
        return int(self.W_K.shape[1])

    @property
    def d_model(self) -> int:
        return int(self.W_Q.shape[2])

    @property
    def d_head(self) -> int:
        return int(self.W_Q.shape[3])

    @property
    def d_vocab(self) -> int:
        return int(self.W_E.shape[0])

    @property
    def rotary(self) -> bool:
        return self.positional_embedding_type == "rotary"

    def kv_head(self, head: int) -> int:
        """The key/value head query head `head` reads: h // (n_heads // n_kv_heads), as repeat_interleave expands them."""
        return kv_head_of(head, self.n_heads, self.n_kv_heads)

    # -- per-head factors ---------------------------------------------------------------------

    def q(self, layer: int, head: int) -> torch.Tensor:
        return self.W_Q[layer, head]

    def k(self, layer: int, head: int) -> torch.Tensor:
        return self.W_K[layer, self.kv_head(head)]

    def v(self, layer: int, head: int) -> torch.Tensor:
        return self.W_V[layer, self.kv_head(head)]

    def o(self, layer: int, head: int) -> torch.Tensor:
        return self.W_O[layer, head]

    def qk(self, layer: int, head: int) -> FactoredMatrix:
        """W_QK = W_Q W_Kᵀ, d_model × d_model, kept factored."""
        return FactoredMatrix(self.q(layer, head), self.k(layer, head).T)

    def ov(self, layer: int, head: int) -> FactoredMatrix:
        """W_OV = W_V W_O, d_model × d_model, kept factored."""
        return FactoredMatrix(self.v(layer, head), self.o(layer, head))

    def full_ov(self, layer: int, head: int) -> FactoredMatrix:
        """W_E W_OV W_U as the factored product (W_E W_V)(W_O W_U): vocab × vocab, never multiplied out."""
        return FactoredMatrix(self.W_E @ self.v(layer, head), self.o(layer, head) @ self.W_U)

    def full_qk(self, layer: int, head: int) -> FactoredMatrix:
        """W_E W_QK W_Eᵀ as the factored product (W_E W_Q)(W_Kᵀ W_Eᵀ)."""
        return FactoredMatrix(self.W_E @ self.q(layer, head), (self.W_E @ self.k(layer, head)).T)


def kv_head_of(head: int, n_heads: int, n_kv_heads: int) -> int:
    if n_kv_heads <= 0 or n_heads % n_kv_heads:
        raise ValueError(f"{n_heads} query heads cannot share {n_kv_heads} key/value heads evenly")
    return head // (n_heads // n_kv_heads)


def _norm_scale(norm) -> tuple[torch.Tensor | None, bool]:
    """(γ as the norm multiplies it, whether it centres) of a TransformerBridge norm component."""
    if norm is None:
        return None, False
    weight = getattr(norm, "weight", None)
    centres = not bool(getattr(norm, "uses_rms_norm", False))
    if weight is None:
        return None, centres
    gamma = weight.detach().float()
    if bool(getattr(norm, "uses_weight_offset", False)):
        gamma = 1.0 + gamma
    return gamma, centres


def _centre(w: torch.Tensor, dim: int) -> torch.Tensor:
    return w - w.mean(dim, keepdim=True)


@torch.no_grad()
def circuit_weights(bridge, fold_ln: bool = True) -> CircuitWeights:
    """The attention weights of a TransformerBridge, as float32 copies, raw or norm-folded (see the module doc)."""
    cfg = bridge.cfg
    n_heads = int(cfg.n_heads)
    W_Q = bridge.W_Q.detach().float()
    W_K = bridge.W_K.detach().float()
    W_V = bridge.W_V.detach().float()
    W_O = bridge.W_O.detach().float()
    n_kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
    # The bridge's stacked W_K/W_V hold one entry per key/value head; check that before
    # trusting the h // group mapping, so a change in TransformerLens' layout fails loudly.
    if W_K.shape[1] != n_kv or W_V.shape[1] != n_kv or W_Q.shape[1] != n_heads or W_O.shape[1] != n_heads:
        raise ValueError(
            f"unexpected attention weight shapes W_Q {tuple(W_Q.shape)}, W_K {tuple(W_K.shape)}, "
            f"W_V {tuple(W_V.shape)}, W_O {tuple(W_O.shape)} for {n_heads} heads sharing {n_kv} key/value heads"
        )
    W_E = bridge.W_E.detach().float()
    W_U = bridge.W_U.detach().float()
    pos_type = str(getattr(cfg, "positional_embedding_type", "standard"))
    try:
        W_pos = bridge.W_pos.detach().float() if pos_type == "standard" else None
    except AttributeError:
        W_pos = None
    if fold_ln:
        any_layernorm = False
        folded_q, folded_k, folded_v = [], [], []
        for layer in range(W_Q.shape[0]):
            gamma, centres = _norm_scale(getattr(bridge.blocks[layer], "ln1", None))
            q, k, v = W_Q[layer], W_K[layer], W_V[layer]
            if gamma is not None:
                q, k, v = (w * gamma[None, :, None] for w in (q, k, v))
            if centres:
                any_layernorm = True
                q, k, v = (_centre(w, -2) for w in (q, k, v))
            folded_q.append(q)
            folded_k.append(k)
            folded_v.append(v)
        W_Q, W_K, W_V = torch.stack(folded_q), torch.stack(folded_k), torch.stack(folded_v)
        # W_U and W_E are vocabulary-sized: one copy each (never the model's own tensor), then in place.
        gamma_final, final_centres = _norm_scale(getattr(bridge, "ln_final", None))
        W_U = W_U * gamma_final[:, None] if gamma_final is not None else W_U.clone()
        if final_centres:
            W_U.sub_(W_U.mean(0, keepdim=True))
        W_U.sub_(W_U.mean(-1, keepdim=True))  # centre_unembed: over the vocabulary
        if any_layernorm or final_centres:
            # Writing weights are centred only in LayerNorm models (RMSNorm does not
            # subtract the mean, so centring would change what it sees).
            W_E = _centre(W_E, -1)
            W_O = _centre(W_O, -1)
            if W_pos is not None:
                W_pos = _centre(W_pos, -1)
    return CircuitWeights(
        W_E=W_E, W_U=W_U, W_pos=W_pos, W_Q=W_Q, W_K=W_K, W_V=W_V, W_O=W_O, fold_ln=fold_ln, positional_embedding_type=pos_type
    )


# -- restricted circuits ---------------------------------------------------------------------------


@torch.no_grad()
def restricted_qk(w: CircuitWeights, layer: int, head: int, query_tokens, key_tokens) -> np.ndarray:
    """[query token, key token] entries of the full QK circuit W_E W_Q W_Kᵀ W_Eᵀ."""
    q_side = w.W_E[torch.as_tensor(query_tokens, dtype=torch.long)] @ w.q(layer, head)
    k_side = w.W_E[torch.as_tensor(key_tokens, dtype=torch.long)] @ w.k(layer, head)
    return (q_side @ k_side.T).cpu().numpy()


@torch.no_grad()
def restricted_ov(w: CircuitWeights, layer: int, head: int, source_tokens, output_tokens) -> np.ndarray:
    """[attended token, output token] entries of the full OV circuit W_E W_V W_O W_U."""
    rows = w.W_E[torch.as_tensor(source_tokens, dtype=torch.long)] @ w.v(layer, head) @ w.o(layer, head)
    return (rows @ w.W_U[:, torch.as_tensor(output_tokens, dtype=torch.long)]).cpu().numpy()


@torch.no_grad()
def positional_qk(w: CircuitWeights, layer: int, head: int, n_positions: int) -> np.ndarray:
    """[query position, key position] of W_pos W_Q W_Kᵀ W_posᵀ: the score term from positions alone."""
    if w.W_pos is None:
        raise ValueError("this model has no learned absolute position embeddings")
    pos = w.W_pos[:n_positions]
    return ((pos @ w.q(layer, head)) @ (pos @ w.k(layer, head)).T).cpu().numpy()


@torch.no_grad()
def ov_top_outputs(w: CircuitWeights, layer: int, head: int, source_tokens, k: int = 5, vocab_block: int = 8192):
    """For each source token: the k output tokens whose logits attending to it raises most, over the whole vocabulary.

    Returns (ids [n, k], values [n, k], self_rank [n]); self_rank is 0 when the token's own
    logit is its row's maximum. Rows are few, so a [n, vocab] slab is small.
    """
    src = torch.as_tensor(source_tokens, dtype=torch.long)
    rows = w.W_E[src] @ w.v(layer, head) @ w.o(layer, head)  # [n, d_model]
    logits = torch.cat([rows @ w.W_U[:, start : start + vocab_block] for start in range(0, w.d_vocab, vocab_block)], dim=1)
    values, ids = logits.topk(min(k, w.d_vocab), dim=1)
    own = logits.gather(1, src[:, None])
    self_rank = (logits > own).sum(1)
    return ids.cpu().numpy(), values.cpu().numpy(), self_rank.cpu().numpy()


# -- spectra ---------------------------------------------------------------------------------------


@torch.no_grad()
def _gram(left: torch.Tensor, right: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """left @ right, summed over the (vocabulary) inner axis in blocks to bound memory."""
    # Each block's product in float32 (fast), the sum over blocks in float64 (accurate).
    out = torch.zeros(left.shape[0], right.shape[1], dtype=torch.float64, device=left.device)
    for start in range(0, left.shape[1], block):
        out += (left[:, start : start + block].float() @ right[start : start + block].float()).double()
    return out


@torch.no_grad()
def ov_eigenvalues(w: CircuitWeights) -> np.ndarray:
    """Eigenvalues of every head's full OV circuit, [layer, head, d_head] complex.

    The full OV circuit is A B with A = W_E W_V and B = W_O W_U; its non-zero eigenvalues
    are those of B A = W_O (W_U W_E) W_V, a d_head × d_head matrix (what
    FactoredMatrix.eigenvalues computes). W_U W_E is d_model × d_model and shared by all
    heads; (W_U W_E) W_V is shared by the query heads of one key/value head.
    """
    unembed_embed = _gram(w.W_U, w.W_E).float()  # [d_model, d_model]
    return _small_side_eigenvalues(w, lambda layer, kv: unembed_embed @ w.W_V[layer, kv], lambda layer, head: w.W_O[layer, head])


@torch.no_grad()
def qk_eigenvalues(w: CircuitWeights) -> np.ndarray:
    """Eigenvalues of every head's full QK circuit W_E W_Q W_Kᵀ W_Eᵀ, from W_Kᵀ (W_Eᵀ W_E) W_Q, [layer, head, d_head]."""
    embed_gram = _gram(w.W_E.T, w.W_E).float()
    # W_Kᵀ (W_Eᵀ W_E) W_Q has the eigenvalues of its transpose W_Qᵀ (W_Eᵀ W_E) W_K, whose
    # right factor is shared by the query heads of one key/value head.
    return _small_side_eigenvalues(w, lambda layer, kv: embed_gram @ w.W_K[layer, kv], lambda layer, head: w.W_Q[layer, head].T)


def _small_side_eigenvalues(w: CircuitWeights, shared_right, left) -> np.ndarray:
    """Eigenvalues of left(layer, head) @ shared_right(layer, kv_head(head)), each d_head × d_head, in float64."""
    out = np.zeros((w.n_layers, w.n_heads, w.d_head), dtype=np.complex128)
    for layer in range(w.n_layers):
        right = [shared_right(layer, kv) for kv in range(w.n_kv_heads)]
        small = torch.stack([left(layer, head) @ right[w.kv_head(head)] for head in range(w.n_heads)])
        out[layer] = torch.linalg.eigvals(small.double()).cpu().numpy()
    return out


def copying_score(eigenvalues: np.ndarray) -> np.ndarray:
    """Re(Σλ) / Σ|λ| over the last axis: +1 when every eigenvalue is positive (copying), −1 when all negative."""
    eigenvalues = np.asarray(eigenvalues)
    total = np.abs(eigenvalues).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = eigenvalues.sum(-1).real / total
    return np.where(total > 0, score, 0.0)


# -- self-top fraction -----------------------------------------------------------------------------


@torch.no_grad()
def ov_self_top(w: CircuitWeights, layer: int, head: int, tokens=None, row_chunk: int = 1024, first_block: int = 256, max_block: int = 8192) -> np.ndarray:
    """Boolean [len(tokens)]: whether token t's row of the full OV circuit has its argmax at t.

    `tokens` are the rows to test (default: the whole vocabulary); each row is compared
    with every output token. Argmax semantics (ties go to the lowest index), computed
    without the vocab × vocab matrix:

    - rows go in chunks of `row_chunk`, each row x = W_E[t] W_V against the columns
      u = W_O W_U[:, b]; a chunk first meets the columns of its own tokens;
    - then every column, largest ‖u‖ first (a column with a large norm is the likeliest to
      beat a row's own entry), in blocks that double from `first_block` to `max_block`;
      a row drops out as soon as some column beats its own entry;
    - near-ties are settled in float64 (see _survivors).

    Most rows of most heads lose to one of the first few hundred columns, so a head that
    does not copy costs a small fraction of a full pass. Extra memory is about
    row_chunk × max_block floats.
    """
    vocab = w.d_vocab
    device = w.W_E.device
    token_ids = torch.arange(vocab, device=device) if tokens is None else torch.as_tensor(tokens, dtype=torch.long, device=device)
    value = w.v(layer, head)
    cols_all = w.o(layer, head) @ w.W_U  # [d_head, vocab]
    col_norms = cols_all.norm(dim=0)
    order = col_norms.argsort(descending=True)
    cols_ordered = cols_all[:, order]
    blocks, start, size = [], 0, first_block
    while start < vocab:
        blocks.append((start, min(start + size, vocab)))
        start, size = start + size, min(2 * size, max_block)
    result = np.zeros(len(token_ids), dtype=bool)
    for chunk_start in range(0, len(token_ids), row_chunk):
        row_ids = token_ids[chunk_start : chunk_start + row_chunk]
        x = w.W_E[row_ids] @ value  # [rows, d_head]
        # |float32 error of a d_head-term dot product| ≤ d_head · eps · ‖x‖‖u‖; twice that, to be safe.
        slack = 2 * w.d_head * torch.finfo(torch.float32).eps * x.norm(dim=1) * col_norms.max()
        own_cols = cols_all[:, row_ids]
        own_block = x @ own_cols
        own = own_block.diagonal().clone()
        own_block.fill_diagonal_(-torch.inf)  # a row is not its own rival
        alive = _survivors(own_block, own, row_ids, row_ids, x, own_cols, own_cols, slack)
        in_own_block = torch.zeros(vocab, dtype=torch.bool, device=device)
        in_own_block[row_ids] = True
        for b_start, b_stop in blocks:
            if not bool(alive.any()):
                break
            idx = alive.nonzero().squeeze(1)
            col_ids = order[b_start:b_stop]
            block_cols = cols_ordered[:, b_start:b_stop]
            values = x[idx] @ block_cols
            masked = in_own_block[col_ids]  # compared with the chunk's own block already
            if bool(masked.any()):
                values[:, masked] = -torch.inf
            keep = _survivors(values, own[idx], row_ids[idx], col_ids, x[idx], block_cols, own_cols[:, idx], slack[idx])
            alive[idx[~keep]] = False
        result[chunk_start : chunk_start + len(row_ids)] = alive.cpu().numpy()
    return result


def self_top_sample(vocab: int, size: int, seed: int = 0) -> np.ndarray | None:
    """Sorted random token ids at which to measure the self-top fraction; None means the whole vocabulary."""
    if size <= 0 or size >= vocab:
        return None
    return np.sort(np.random.default_rng(seed).choice(vocab, size=size, replace=False))


def _survivors(values, own, row_ids, col_ids, x, cols, own_cols, slack) -> torch.Tensor:
    """Rows whose own entry is still their argmax after this block: nothing larger, no equal value at a lower index.

    values [rows, block] are float32 products of x [rows, d_head] and cols [d_head, block]
    (block columns with ids col_ids); own [rows] is each row's own entry, own_cols
    [d_head, rows] its own column. One max-reduction decides almost every row. A row whose
    block maximum is within `slack` (a bound on float32 rounding) of its own entry is a
    near-tie that rounding could flip, because entries come from different matmuls: it is
    decided again in float64, its own entry and its rivals computed in one call so that
    equal vectors give equal numbers, and exact ties go to the lower index.
    """
    best = values.max(dim=1).values
    keep = best < own - slack
    close = ((best >= own - slack) & (best <= own + slack)).nonzero().squeeze(1)
    for r in close.tolist():
        rivals = (values[r] >= own[r] - slack[r]).nonzero().squeeze(1)
        vectors = torch.cat([cols[:, rivals], own_cols[:, r : r + 1]], dim=1).double()  # own column last
        exact = (x[r].double()[None, :] * vectors.T).sum(-1)
        rival_values, own_value = exact[:-1], exact[-1]
        rival_ids = col_ids[rivals]
        not_self = rival_ids != row_ids[r]
        beaten = not_self & ((rival_values > own_value) | ((rival_values == own_value) & (rival_ids < row_ids[r])))
        keep[r] = not bool(beaten.any())
    return keep


# -- composition -----------------------------------------------------------------------------------


def _layer_factors(w: CircuitWeights, mode: str, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A1, B1, A2, B2), each [head, ...], for one layer: M1 = A1 B1 = W_OV as a writing head, M2 = A2 B2 as a reading one."""
    kv = torch.tensor([w.kv_head(h) for h in range(w.n_heads)], dtype=torch.long)
    W_Q, W_K, W_V, W_O = w.W_Q[layer], w.W_K[layer][kv], w.W_V[layer][kv], w.W_O[layer]
    if mode == "q":  # M2 = W_QK: the earlier head's output feeds the query side
        A2, B2 = W_Q, W_K.transpose(-2, -1)
    elif mode == "k":  # M2 = W_QKᵀ = W_K W_Qᵀ: it feeds the key side
        A2, B2 = W_K, W_Q.transpose(-2, -1)
    elif mode == "v":  # M2 = W_OV: it feeds the values
        A2, B2 = W_V, W_O
    else:
        raise ValueError(f"composition mode must be one of {COMPOSITION_MODES}, not {mode!r}")
    return W_V, W_O, A2, B2


def _left_core(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """R_A B, [..., r, d]: for A = Q_A R_A with orthonormal Q_A, ‖A B X‖_F = ‖R_A B X‖_F for any X."""
    R = torch.linalg.qr(A.double(), mode="r").R
    return (R @ B.double()).float()


def _right_core(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A R_Bᵀ, [..., d, r]: for Bᵀ = Q_B R_B, ‖X A B‖_F = ‖X A R_Bᵀ‖_F for any X."""
    R = torch.linalg.qr(B.double().transpose(-2, -1), mode="r").R
    return (A.double() @ R.transpose(-2, -1)).float()


def composition_rows(w: CircuitWeights, mode: str) -> Iterator[tuple[int, np.ndarray]]:
    """(l1, [H, L, H] scores from layer l1's heads into every head) for l1 = 0 .. L-2; see composition_scores.

    A generator, so a caller can report progress (and be cancelled) between source layers.
    """
    with torch.no_grad():
        L, H, d = w.n_layers, w.n_heads, w.d_model
        left = right = None
        left_norm = torch.zeros(L, H, dtype=torch.float64)  # ‖M1‖_F
        right_norm = torch.zeros(L, H, dtype=torch.float64)  # ‖M2‖_F
        for layer in range(L):
            A1, B1, A2, B2 = _layer_factors(w, mode, layer)
            core_left, core_right = _left_core(A1, B1), _right_core(A2, B2)  # [H, r, d], [H, d, r2]
            if left is None:  # filled layer by layer: no stacked copy, no float64 copy of the whole
                left = torch.empty((L, *core_left.shape), dtype=core_left.dtype)
                right = torch.empty((L, *core_right.shape), dtype=core_right.dtype)
            left[layer], right[layer] = core_left, core_right
            left_norm[layer] = core_left.double().pow(2).sum((-2, -1)).sqrt()
            right_norm[layer] = core_right.double().pow(2).sum((-2, -1)).sqrt()
    r, r2 = left.shape[2], right.shape[-1]
    for l1 in range(L - 1):
        with torch.no_grad():
            later = right[l1 + 1 :]  # [L2, H, d, r2]
            n_later = later.shape[0]
            product = left[l1].reshape(H * r, d) @ later.permute(2, 0, 1, 3).reshape(d, n_later * H * r2)
            norms = product.reshape(H, r, n_later, H, r2).pow_(2).sum((1, 4)).double().sqrt()  # [H, L2, H]
            row = torch.zeros(H, L, H, dtype=torch.float64)
            row[:, l1 + 1 :, :] = norms / left_norm[l1][:, None, None] / right_norm[l1 + 1 :][None]
        yield l1, row.numpy()


def composition_scores(w: CircuitWeights, mode: str) -> np.ndarray:
    """[L, H, L, H] scores ‖M1 M2‖_F / (‖M1‖_F ‖M2‖_F) from head (l1, h1) into (l2, h2); 0 unless l1 < l2.

    M1 = W_OV of the earlier head; M2 = W_QK (Q-composition), W_QKᵀ (K) or W_OV (V) of the
    later one. The same quantity as TransformerLens' all_composition_scores, computed so
    that it fits in memory on larger models: each head's d_model × d_model matrix is
    replaced by a rank-d_head core with the same product norms (see _left_core and
    _right_core), and one source layer at a time meets every later layer, so the largest
    temporary holds (H·d_head) × (L·H·d_head) floats.
    """
    scores = np.zeros((w.n_layers, w.n_heads, w.n_layers, w.n_heads))
    for l1, row in composition_rows(w, mode):
        scores[l1] = row
    return scores


def random_composition_baseline(d_model: int, d_head: int, samples: int = 64, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of the composition score of random Gaussian factors with a head's shapes.

    M1 = A1 B1 and M2 = A2 B2 with A [d_model, d_head], B [d_head, d_model] i.i.d. N(0, 1):
    the same shapes for Q-, K- and V-composition, so one baseline serves all three.
    """
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(samples):
        A1, A2 = (torch.randn(d_model, d_head, generator=generator, dtype=torch.float64) for _ in range(2))
        B1, B2 = (torch.randn(d_head, d_model, generator=generator, dtype=torch.float64) for _ in range(2))
        M1, M2 = A1 @ B1, A2 @ B2
        values.append(float(torch.linalg.norm(M1 @ M2) / (torch.linalg.norm(M1) * torch.linalg.norm(M2))))
    array = np.asarray(values)
    return float(array.mean()), float(array.std(ddof=1)) if samples > 1 else 0.0


def iter_heads(n_layers: int, n_heads: int) -> Iterator[tuple[int, int]]:
    for layer in range(n_layers):
        for head in range(n_heads):
            yield layer, head
