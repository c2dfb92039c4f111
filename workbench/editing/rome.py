"""Rank-One Model Editing (Meng et al. 2022) with the r-ROME fix (Gupta et al. 2024).

k*: the MLP key at the subject's last token, averaged over the bare prompt and prompts
behind short prefixes sampled from the model. v*: the MLP output there that makes the
model say the new target, found by gradient steps on an added δ (target NLL, a KL term
that keeps "{subject} is a" as it was, a norm penalty and a norm clamp). The update
ΔW = (v* - W k*) uᵀ / (u · k*), u = C⁻¹k*, then writes v* for k* exactly, and changes
W k only in proportion to kᵀC⁻¹k* for other keys. r-ROME: k* on both sides (the
reference code put the bare-prompt key in the denominator, which can blow up).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..engines.base import DeltaFit, TokenChoice
from ..engines.fitting import fit_steps
from ..errors import InputError
from ..progress import Progress
from .delta_pass import DeltaPass
from .edits import RomeEdit
from .prompts import EditRequest, padded_batch, target_ids
from .target import MlpOutput, mlp_output
from .v_objective import VObjective

# MEMIT's prefix seeds for models whose tokenizer adds no BOS to start from.
PREFIX_STARTS = ("The", "Therefore", "Because", "I", "You")
KL_TEMPLATE = "{} is a"


@dataclass
class RomeHparams:
    """The reference code's defaults (rome/hparams/ROME/gpt2-xl.json), but for the prefix counts."""

    v_lr: float = 0.5
    v_steps: int = 20
    v_weight_decay: float = 0.5
    kl_factor: float = 0.0625
    clamp_norm_factor: float = 4.0
    early_stop_loss: float = 0.05
    # ROME samples 10 + 10 prefixes; 5 + 5 halves the cost of every v* step on a CPU (see the plugin's help).
    short_prefixes: int = 5  # sampled prefixes of 5 tokens
    long_prefixes: int = 5  # sampled prefixes of 10 tokens
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RomeComputation:
    """Everything the edit was made of, for the result view."""

    edit: RomeEdit
    contexts: list[str]
    k_star: np.ndarray
    v_star: np.ndarray
    v0: np.ndarray
    losses: np.ndarray  # [step, 4]: total, target NLL, KL, norm penalty
    target_prob: np.ndarray  # [step]: mean P(target) over the prefixed prompts
    seconds_k: float = 0.0
    seconds_v: float = 0.0
    extra: dict = field(default_factory=dict)


def _device(model) -> torch.device:
    return model.engine.device


@torch.no_grad()
def sample_prefixes(model, count: int, length: int, seed: int) -> list[str]:
    """count texts of `length` tokens sampled from the model (top-5, as ROME's generate_fast)."""
    if count <= 0:
        return []
    tok = model.tokenizer
    starts: list[list[int]] = []
    if model.tokenizer_prepends_bos and model.bos_token_id is not None:
        starts = [[model.bos_token_id]]
    else:
        for word in PREFIX_STARTS:
            ids = list(tok(word, add_special_tokens=False)["input_ids"])
            if len(ids) == 1:
                starts.append(ids)
        if not starts:
            starts = [[model.bos_token_id if model.bos_token_id is not None else 0]]
    seqs = torch.tensor([starts[i % len(starts)] for i in range(count)], dtype=torch.long)
    skip = 1 if model.tokenizer_prepends_bos else 0
    special = tuple(sorted(set(getattr(tok, "all_special_ids", []) or [])))
    # All tokens in one engine call: one job on NDIF.
    seqs = model.engine.extend(seqs, length + 1 - seqs.shape[1], TokenChoice(top_k=5, seed=seed * 1000 + length, banned=special))
    texts = [tok.decode(row[skip:].tolist()) for row in seqs]
    return [t.replace("{", "").replace("}", "").strip() for t in texts]


def _separator(model) -> str:
    unk = getattr(model.tokenizer, "unk_token_id", None)
    dot = list(model.tokenizer(".", add_special_tokens=False)["input_ids"])
    return " " if not dot or (unk is not None and unk in dot) else ". "


# Sampled once per (unedited model, counts, seed) and reused, as ROME's CONTEXT_TEMPLATES_CACHE:
# sampling costs a dozen forward passes, and every edit of a session then sees the same contexts.
_TEMPLATES: dict[tuple, list[str]] = {}


def context_templates(model, hp: RomeHparams) -> list[str]:
    """'{}' plus 'prefix. {}' for the sampled prefixes: ROME's contexts for k* and v*."""
    from .edits import base_fingerprint

    key = (base_fingerprint(model), hp.short_prefixes, hp.long_prefixes, hp.seed)
    if key not in _TEMPLATES:
        sep = _separator(model)
        prefixes = sample_prefixes(model, hp.short_prefixes, 5, hp.seed) + sample_prefixes(model, hp.long_prefixes, 10, hp.seed)
        _TEMPLATES[key] = ["{}"] + [p + sep + "{}" for p in prefixes if p]
    return list(_TEMPLATES[key])


def _subject_positions(model, texts: list[str], subject_ends: list[int]) -> tuple[list[list[int]], list[int]]:
    from .prompts import last_subject_token

    ids, positions = [], []
    for text, end in zip(texts, subject_ends):
        row, index = last_subject_token(model, text, end)
        ids.append(row)
        positions.append(index)
    return ids, positions


def _contexts(request: EditRequest, templates: list[str]) -> tuple[list[str], list[int]]:
    prompt = request.prompt
    subject_end_in_prompt = request.template.index("{}") + len(request.subject)
    texts, ends = [], []
    for templ in templates:
        texts.append(templ.replace("{}", prompt))
        ends.append(templ.index("{}") + subject_end_in_prompt)
    return texts, ends


def edit_contexts(model, request: EditRequest, hp: RomeHparams) -> tuple[list[str], list[list[int]], list[int]]:
    """(texts, their ids, each one's last subject token): the prompt behind each context prefix."""
    texts, ends = _contexts(request, context_templates(model, hp))
    ids, positions = _subject_positions(model, texts, ends)
    return texts, ids, positions


def compute_k(model, target: MlpOutput, ids: list[list[int]], positions: list[int]) -> torch.Tensor:
    """k*: the mean key at the subject's last token over the contexts."""
    keys = target.keys_of(model.bridge, padded_batch(ids).to(_device(model))).float()[torch.arange(len(ids)), torch.tensor(positions)]
    return keys.mean(dim=0).cpu()


def _frozen(model):
    class Frozen:
        def __enter__(self):
            self.flags = [(p, p.requires_grad) for p in model.bridge.parameters()]
            for p, _ in self.flags:
                p.requires_grad_(False)

        def __exit__(self, *exc):
            for p, flag in self.flags:
                p.requires_grad_(flag)

    return Frozen()


@dataclass
class VSearch:
    """The v* search's rows and what its loss reads, shared by every engine: the prefixed
    prompts with the new target teacher-forced, then the KL prompt; δ goes in at each row's
    edit position, and logits are needed at needed_pos [rows, needed]."""

    rows: list[list[int]]
    edit_pos: list[int]
    needed_pos: torch.Tensor
    objective: VObjective


def v_search(model, request: EditRequest, ctx_ids, ctx_positions, v0: torch.Tensor, hp: RomeHparams, prompt_texts: list[str]) -> VSearch:
    new_ids = [target_ids(model, text, request.target_new) for text in prompt_texts]
    kl_text = KL_TEMPLATE.replace("{}", request.subject)
    kl_ids, kl_pos = _subject_positions(model, [kl_text], [len(request.subject)])
    rows = [list(ids) + list(t[:-1]) for ids, t in zip(ctx_ids, new_ids)] + kl_ids
    edit_pos = list(ctx_positions) + kl_pos
    n_ctx = len(ctx_ids)
    # Gather indices of every target token's predicting position, padded with a masked slot.
    width = max(len(t) for t in new_ids)
    pred_pos = torch.zeros(n_ctx, width, dtype=torch.long)
    pred_tok = torch.zeros(n_ctx, width, dtype=torch.long)
    mask = torch.zeros(n_ctx, width)
    for r, (ids, t) in enumerate(zip(ctx_ids, new_ids)):
        for j, token in enumerate(t):
            pred_pos[r, j], pred_tok[r, j], mask[r, j] = len(ids) - 1 + j, token, 1.0
    # Every row's logits are needed only where a target token is predicted (the KL
    # row: at the subject); row r's j-th needed position is needed_pos[r, j].
    needed_pos = torch.cat([pred_pos, torch.tensor(kl_pos)[:, None].expand(-1, width)])
    v0_norm = v0.float().norm()
    objective = VObjective(
        n_ctx=n_ctx,
        pred_tok=pred_tok,
        mask=mask,
        kl_factor=hp.kl_factor,
        weight_decay=hp.v_weight_decay,
        v0_norm=float(v0_norm),
        max_norm=float(hp.clamp_norm_factor * v0_norm),
        early_stop_loss=hp.early_stop_loss,
    )
    return VSearch(rows, edit_pos, needed_pos, objective)


def delta_fit(search: VSearch, point: str, d_model: int, hp: RomeHparams) -> DeltaFit:
    """The search as Engine.fit_delta takes it (right-padded rows: padding comes after every position read)."""
    return DeltaFit(padded_batch(search.rows), point, search.edit_pos, search.needed_pos, search.objective, d_model, hp.v_steps, hp.v_lr)


def _history(records: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """(losses [step, 4], P(target) per step) from the objective's records."""
    return np.asarray([r[:4] for r in records], dtype=np.float32).reshape(-1, 4), np.asarray([r[4] for r in records], dtype=np.float32)


def _step_message(step: int, record: list[float]) -> str:
    return f"optimising v*: step {step + 1}, loss {record[0]:.3f}"


def compute_v(model, target: MlpOutput, request: EditRequest, ctx_ids, ctx_positions, v0: torch.Tensor, hp: RomeHparams, prompt_texts: list[str]):
    """Generator: yields Progress per step, returns (v*, losses [step, 4], P(target) per step).
    On TransformerBridge, each step runs from the edited layer on (DeltaPass)."""
    device = _device(model)
    search = v_search(model, request, ctx_ids, ctx_positions, v0, hp, prompt_texts)
    logits_with = DeltaPass(model, target, search.rows, search.edit_pos, search.needed_pos)
    fit = delta_fit(search, target.value_hook, int(v0.numel()), hp)
    records: list[list[float]] = []
    delta = torch.zeros_like(v0)
    with _frozen(model), torch.enable_grad():
        for step, record, current in fit_steps(logits_with, fit, device):
            delta = current
            records.append(record)
            yield Progress(step + 1, hp.v_steps, _step_message(step, record))
    v_star = (v0.to(device) + delta.detach()).cpu()
    return (v_star, *_history(records))


# The LU factors of the last C solved with: every edit of an evaluation (and of a session at
# one layer) solves with the same C, and factoring it costs about 0.1 s at d_mlp 1536, the
# solve with the factors a millisecond. Keyed by C's contents, so a changed C is factored anew.
_FACTORS: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
# Kept only up to this d_mlp: the factors are d_mlp² float64s, 128 MiB at 4096, but 1.5 GiB for
# an 8B model's 14,336, held for as long as the process runs; wider C is factored per edit.
_MAX_KEPT_WIDTH = 4096


def _lu_factors(second_moment: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    array = np.ascontiguousarray(second_moment)
    if array.shape[0] > _MAX_KEPT_WIDTH:
        _FACTORS.clear()
        return _factored(array)
    key = hashlib.blake2b(array.view(np.uint8).reshape(-1).data, digest_size=16).digest() + str((array.shape, array.dtype.str)).encode()
    if key not in _FACTORS:
        factors = _factored(array)
        _FACTORS.clear()
        _FACTORS[key] = factors
    return _FACTORS[key]


def _factored(array: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        return torch.linalg.lu_factor(torch.from_numpy(array).double())
    except RuntimeError:
        raise InputError("The key statistics matrix C is singular.", "use a longer corpus (about 10 × d_mlp tokens)") from None


def rank_one_update(second_moment: np.ndarray, k_star: torch.Tensor, v_star: torch.Tensor, w_k_star: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(u, right) with ΔW = right ⊗ u: u = C⁻¹k*/‖C⁻¹k*‖, right = (v* - W k*)/(u · k*).
    C⁻¹k* as torch.linalg.solve computes it (LU with partial pivoting, then the two
    triangular solves), bit for bit, from factors kept for the next edit."""
    k = k_star.double()
    lu, pivots = _lu_factors(second_moment)
    solved = torch.linalg.lu_solve(lu, pivots, k[:, None])[:, 0]
    if not torch.isfinite(solved).all():
        raise InputError("The key statistics matrix C is singular.", "use a longer corpus (about 10 × d_mlp tokens)")
    u = solved / solved.norm()
    right = (v_star.double() - w_k_star.double()) / torch.dot(u, k)
    return u.float().numpy(), right.float().numpy()


def compute_edit(model, request: EditRequest, layer: int, second_moment: np.ndarray, hp: RomeHparams | None = None):
    """Generator: yields Progress, returns a RomeComputation whose edit is not yet applied."""
    hp = hp or RomeHparams()
    target = mlp_output(model, layer)
    started = time.perf_counter()
    yield Progress(0, hp.v_steps + 2, "sampling context prefixes")
    texts, ids, positions = edit_contexts(model, request, hp)
    yield Progress(1, hp.v_steps + 2, "computing k*")
    k_star = compute_k(model, target, ids, positions)
    v0 = target.output(k_star).cpu()
    seconds_k = time.perf_counter() - started
    job = compute_v(model, target, request, ids, positions, v0, hp, texts)
    while True:
        try:
            p = next(job)
        except StopIteration as stop:
            v_star, losses, probs = stop.value
            break
        yield Progress(1 + p.done, hp.v_steps + 2, p.message)
    return finished_edit(second_moment, request, layer, hp, target.name, texts, k_star, v_star, v0, losses, probs, started, seconds_k)


def finished_edit(second_moment, request: EditRequest, layer: int, hp: RomeHparams, weight_name: str, texts, k_star, v_star, v0, losses, probs, started: float, seconds_k: float) -> RomeComputation:
    """The update from k*, v* and C, and everything it was made of."""
    u, right = rank_one_update(second_moment, k_star, v_star, v0)
    edit = RomeEdit(layer=layer, left=u, right=right, request=request.to_dict(), hparams=hp.to_dict(), weight_name=weight_name)
    return RomeComputation(
        edit=edit,
        contexts=texts,
        k_star=k_star.numpy(),
        v_star=v_star.numpy(),
        v0=v0.numpy(),
        losses=losses,
        target_prob=probs,
        seconds_k=seconds_k,
        seconds_v=time.perf_counter() - started - seconds_k,
    )
