"""Train a tiny 2-layer GPT-2 with a known induction circuit.

Usage (from the repo root, with the venv active):

    python assets/lab/train_induction.py [--out DIR] [--steps N] [--seed S]

Writes a Hugging Face folder (config.json, model.safetensors, tokenizer files)
plus ``lab.json``, which records the circuit found by TransformerLens'
head detector and a causal (zero-ablation) check.  Everything is
deterministic: fixed seeds, CPU, two threads.

Task: random token sequences containing a block repeated twice
(``r_1..r_n r_1..r_n``, ``n`` uniform in [N_MIN, N_MAX], at a random offset),
plus some "a b a b" runs and some plain random sequences.  Only repeated
tokens are predictable, and only by induction: a previous-token head in
layer 0 writes "token before me" into each position; an induction head in
layer 1 uses it (K-composition) to attend to the token after the earlier
copy of the current token and copies it.  Evaluation uses the plain format
``[<bos>, r_1..r_n, r_1..r_n]``.

The first half of training adds a decaying attention-supervision loss that
pins the circuit to two designated heads (see SUPERVISION below); lab.json
records what the final model does, measured without it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "induction"

# ---- task / model hyperparameters -------------------------------------------
N_TOKENS = 64  # ordinary tokens t0..t63
BOS, UNK = "<bos>", "<unk>"
BOS_ID, UNK_ID = 0, 1
FIRST_TOKEN_ID = 2  # t{i} has id i + 2
VOCAB_SIZE = N_TOKENS + 2
N_CTX = 64
N_MIN, N_MAX = 4, 31  # repeated-block length; 1 + 2 * 31 = 63 tokens < n_ctx
P_PLAIN_RANDOM = 0.1  # fraction of training sequences with no repetition
P_ALTERNATING = 0.2  # fraction of training sequences holding an "a b a b ..." run

MODEL_KW = dict(
    vocab_size=VOCAB_SIZE,
    n_positions=N_CTX,
    n_embd=128,
    n_layer=2,
    n_head=4,
    n_inner=128,
    activation_function="gelu_new",
    initializer_range=0.05,  # GPT-2's 0.02 makes the induction plateau much longer
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    bos_token_id=BOS_ID,
    eos_token_id=BOS_ID,
    pad_token_id=BOS_ID,
    tie_word_embeddings=True,
)

TRAIN_KW = dict(batch_size=32, lr=2e-3, weight_decay=0.01, warmup=100)

# Warm-start scaffolding.  Trained on next-token loss alone, this model either
# sits on the induction plateau beyond a CPU budget (n_embd 64, init 0.02: no
# phase change within 6k steps) or (n_embd 128, init 0.05) finds an
# off-by-one variant: a layer-0 "2-back" head + the previous-token head let
# layer-1 heads attend to q-n+2 and copy the previous-token channel, which the
# standard induction detector scores ~0.  So for the first SUPERVISION["fraction"] of training
# an auxiliary loss pulls the attention of ONE designated head per layer onto
# its textbook pattern: layer 0 head PREV_HEAD -> previous token, layer 1
# head IND_HEAD -> token after the earlier occurrence of the current token.
# Its weight decays to 0 and the rest of training is plain next-token loss;
# lab.json records what the *final* model does, measured without any of this.
PREV_HEAD = 2
IND_HEAD = 1
SUPERVISION = dict(fraction=0.5, weight=1.0)

# Detector thresholds used to name the circuit in lab.json.
PREV_THRESHOLD = 0.5
INDUCTION_THRESHOLD = 0.5


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---- tokenizer ----------------------------------------------------------------
def build_tokenizer(folder: Path):
    """Word-level tokenizer: 't0'..'t63' split on whitespace, '<bos>' prepended.

    Saved with save_pretrained and reloaded with AutoTokenizer, because a
    tokenizer built in memory from ``tokenizer_object`` lacks ``name_or_path``
    (TransformerLens needs it).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    # <unk> matters: TransformerLens decides whether the tokenizer prepends BOS
    # by encoding "a"; without an unk token that yields just [<bos>] (length 1)
    # and it would conclude "no BOS".
    vocab = {BOS: BOS_ID, UNK: UNK_ID}
    for i in range(N_TOKENS):
        vocab[f"t{i}"] = FIRST_TOKEN_ID + i
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0",
        pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
        special_tokens=[(BOS, BOS_ID)],
    )
    # WordPiece decoder joins tokens with single spaces: "t3 t17 t3 t17".
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token=BOS,
        eos_token=BOS,
        pad_token=BOS,
        unk_token=UNK,
        add_bos_token=True,
        add_eos_token=False,
        model_max_length=N_CTX,
        padding_side="right",
    )
    fast.save_pretrained(str(folder))
    # transformers 5 writes its internal class name; the generic fast class
    # loads to the same thing and is also understood by transformers 4.x.
    cfg_path = folder / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = tok("t0 t63")["input_ids"]
    assert ids == [BOS_ID, FIRST_TOKEN_ID, FIRST_TOKEN_ID + 63], ids
    assert tok.decode(ids, skip_special_tokens=True) == "t0 t63"
    return tok


def ids_to_text(ids) -> str:
    return " ".join(f"t{int(i) - FIRST_TOKEN_ID}" for i in ids)


# ---- data ---------------------------------------------------------------------
def make_batch(gen: torch.Generator, batch_size: int, n_fixed: int | None = None,
               p_plain: float = P_PLAIN_RANDOM, shift: bool = False):
    """Return (tokens [B, T], labels [B, T], rep_mask [B, T], ind_key [B, T]).

    shift=False: ``[<bos>, r_1..r_n, r_1..r_n]`` (right-padded with <bos>).
    shift=True (training): fixed length N_CTX - 1; the two copies start after a
    random-length random prefix and are followed by random filler, so the
    position of the repeat carries no information and the model cannot solve
    the task with a positional shortcut (trained on the plain format alone, it
    learns one: layer-0 heads attending to ~position p/2 instead of p-1).

    labels are next-token targets with -100 on padding (and the last position).
    rep_mask marks positions whose *target* is r_2..r_n of the second copy,
    i.e. the tokens predictable by induction; ind_key holds, at those
    positions, the key position an induction head should attend to (the
    token after the first occurrence of the current token), else -1.
    """
    ns = (torch.full((batch_size,), n_fixed) if n_fixed is not None
          else torch.randint(N_MIN, N_MAX + 1, (batch_size,), generator=gen))
    u = torch.rand(batch_size, generator=gen)
    plain = u < p_plain
    alternating = (u >= 1 - P_ALTERNATING) if shift else torch.zeros_like(plain)
    T = N_CTX - 1 if shift else 1 + 2 * int(ns.max())
    tokens = torch.full((batch_size, T), BOS_ID, dtype=torch.long)
    labels = torch.full((batch_size, T), -100, dtype=torch.long)
    rep_mask = torch.zeros((batch_size, T), dtype=torch.bool)
    ind_key = torch.full((batch_size, T), -1, dtype=torch.long)
    for b in range(batch_size):
        n = int(ns[b])
        length = T - 1 if shift else 2 * n
        seq = torch.randint(FIRST_TOKEN_ID, VOCAB_SIZE, (length,), generator=gen)
        start = 0
        if shift:
            start = int(torch.randint(0, length - 2 * n + 1, (1,), generator=gen))
        if alternating[b]:
            # an "a b a b ..." run: predicting x_{t+1} = x_{t-1} rewards a
            # layer-0 head that copies the previous token's identity.
            run = int(torch.randint(8, 33, (1,), generator=gen))
            s0 = int(torch.randint(0, length - run + 1, (1,), generator=gen))
            for i in range(s0 + 2, s0 + run):
                seq[i] = seq[i - 2]
        elif not plain[b]:
            seq[start + n: start + 2 * n] = seq[start: start + n]
            # Query position p predicts the token at p+1.  The second copy
            # occupies positions 1+start+n .. start+2n; queries
            # 1+start+n .. start+2n-1 predict its r_2..r_n, by attending to
            # key p-n+1 (the token after the earlier copy of the token at p).
            q = torch.arange(1 + start + n, start + 2 * n)
            rep_mask[b, q] = True
            ind_key[b, q] = q - n + 1
        tokens[b, 1: 1 + length] = seq
        labels[b, :length] = seq
    return tokens, labels, rep_mask, ind_key


def masked_loss(logits, labels, mask):
    lp = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
    return (lp * mask).sum() / mask.sum()


def attention_supervision_loss(attentions, ind_key):
    """-log attention of the designated heads to their target keys.

    attentions: per-layer [B, H, Q, K] probabilities (eager attention).
    Layer 0 head PREV_HEAD -> previous position (all positions >= 1).
    Layer 1 head IND_HEAD  -> ind_key (queries in the repeated half only).
    """
    eps = 1e-6
    a0 = attentions[0][:, PREV_HEAD]  # [B, Q, K]
    q = torch.arange(1, a0.shape[1])
    prev = -(a0[:, q, q - 1] + eps).log().mean()
    a1 = attentions[1][:, IND_HEAD]
    bq = (ind_key >= 0).nonzero(as_tuple=True)
    ind = -(a1[bq[0], bq[1], ind_key[bq]] + eps).log().mean()
    return prev, ind


# ---- training -----------------------------------------------------------------
def train(model, steps: int, seed: int, log_every: int = 200):
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=TRAIN_KW["lr"],
                            weight_decay=TRAIN_KW["weight_decay"], betas=(0.9, 0.98))
    warm = TRAIN_KW["warmup"]
    sup_end = int(SUPERVISION["fraction"] * steps)

    def lr_factor(step):  # linear warmup then cosine to 10%
        if step < warm:
            return (step + 1) / warm
        prog = (step - warm) / max(1, steps - warm)
        return 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * prog))

    def aux_weight(step):  # constant for the first half of the window, then linear to 0
        if step >= sup_end:
            return 0.0
        half = sup_end // 2
        return SUPERVISION["weight"] * (1.0 if step < half else (sup_end - step) / (sup_end - half))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    model.train()
    t0 = time.time()
    for step in range(steps):
        tokens, labels, rep_mask, ind_key = make_batch(gen, TRAIN_KW["batch_size"], shift=True)
        w = aux_weight(step)
        out = model(tokens, attention_mask=torch.ones_like(tokens), output_attentions=w > 0)
        logits = out.logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=-100)
        total = loss
        if w > 0:
            prev_l, ind_l = attention_supervision_loss(out.attentions, ind_key)
            total = loss + w * (prev_l + ind_l)
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            with torch.no_grad():
                rep = masked_loss(logits, labels, rep_mask).item()
            extra = f"  aux(prev {prev_l.item():.2f}, ind {ind_l.item():.2f}, w {w:.2f})" if w > 0 else ""
            print(f"step {step:5d}  loss {loss.item():.3f}  repeated-half {rep:.3f}{extra}  "
                  f"({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    return time.time() - t0


# ---- verification with TransformerLens ----------------------------------------
def analyse(folder: Path, seed: int) -> dict:
    from transformer_lens import head_detector
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = folder.resolve()  # TL reloads the tokenizer by name_or_path
    m = AutoModelForCausalLM.from_pretrained(str(folder))
    tok = AutoTokenizer.from_pretrained(str(folder))
    bridge = TransformerBridge.boot_transformers("lab-induction", hf_model=m, tokenizer=tok)
    assert bridge.cfg.tokenizer_prepends_bos, "bridge did not detect the BOS post-processor"
    n_layers, n_heads = bridge.cfg.n_layers, bridge.cfg.n_heads

    gen = torch.Generator().manual_seed(seed + 12345)
    # Head-detector prompts: strings of repeated random blocks (the tokenizer
    # prepends <bos>), n=20 -> 41 tokens.
    prompts = []
    for _ in range(16):
        r = torch.randint(FIRST_TOKEN_ID, VOCAB_SIZE, (20,), generator=gen)
        prompts.append(ids_to_text(torch.cat([r, r])))
    toks0 = bridge.to_tokens(prompts[0])
    assert toks0[0, 0].item() == BOS_ID and toks0.shape[-1] == 41, toks0

    scores = {}
    for key, name in [("previous_token", "previous_token_head"),
                      ("induction", "induction_head"),
                      ("duplicate_token", "duplicate_token_head")]:
        s = head_detector.detect_head(bridge, prompts, name, exclude_bos=True,
                                      error_measure="mul")
        scores[key] = [[round(float(x), 4) for x in row] for row in s]

    # Loss on the repeated half, clean and with heads zero-ablated.
    tokens, labels, rep_mask, _ = make_batch(gen, 256, p_plain=0.0)
    with torch.no_grad():
        hf_logits = m(tokens).logits
        br_logits = bridge(tokens)
    max_diff = (hf_logits - br_logits).abs().max().item()

    def rep_loss(fwd_hooks=()):
        with torch.no_grad():
            logits = bridge.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks))
        return masked_loss(logits, labels, rep_mask).item()

    def zero_head(h):
        def fn(z, hook):  # z: [batch, pos, head, d_head]
            z = z.clone()
            z[:, :, h, :] = 0.0
            return z
        return fn

    def zero_pattern_head(h):
        def fn(p, hook):  # p: [batch, head, q, k]
            p = p.clone()
            p[:, h] = 0.0
            return p
        return fn

    clean = rep_loss()
    ablate_z = [[round(rep_loss([(f"blocks.{L}.attn.hook_z", zero_head(h))]), 4)
                 for h in range(n_heads)] for L in range(n_layers)]
    prev_heads = [[0, h] for h in range(n_heads) if scores["previous_token"][0][h] > PREV_THRESHOLD]
    ind_heads = [[L, h] for L in range(1, n_layers) for h in range(n_heads)
                 if scores["induction"][L][h] > INDUCTION_THRESHOLD]

    def multi(hook_suffix, fn_factory, heads):
        return [(f"blocks.{L}.attn.{hook_suffix}", fn_factory(h)) for L, h in heads]

    prev_abl = rep_loss(multi("hook_z", zero_head, prev_heads)) if prev_heads else None
    # Mean attention of every head from second-copy queries (n=20 block,
    # queries that predict r_2..r_n) to keys at fixed offsets back.
    ptoks = bridge.to_tokens(prompts)
    _, cache = bridge.run_with_cache(ptoks)
    n_blk = 20
    qs = torch.arange(n_blk + 1, 2 * n_blk)
    offsets = {"previous_token (q-1)": 1, "two_back (q-2)": 2,
               "induction (q-n+1)": n_blk - 1, "duplicate_token (q-n)": n_blk}
    attn_offsets = {}
    for name, off in offsets.items():
        attn_offsets[name] = [
            [round(float(cache["pattern", L, "attn"][:, h, qs, qs - off].mean()), 4)
             for h in range(n_heads)] for L in range(n_layers)]
    attn_offsets["bos"] = [
        [round(float(cache["pattern", L, "attn"][:, h, qs, 0].mean()), 4)
         for h in range(n_heads)] for L in range(n_layers)]

    prev_abl_pattern = (rep_loss(multi("hook_pattern", zero_pattern_head, prev_heads))
                        if prev_heads else None)
    ind_abl = rep_loss(multi("hook_z", zero_head, ind_heads)) if ind_heads else None

    return dict(
        scores=scores,
        attn_offsets=attn_offsets,
        prev_heads=prev_heads,
        ind_heads=ind_heads,
        clean=clean,
        prev_abl=prev_abl,
        prev_abl_pattern=prev_abl_pattern,
        ind_abl=ind_abl,
        ablate_z=ablate_z,
        bridge_hf_max_logit_diff=max_diff,
        example_prompt=prompts[0],
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder")
    ap.add_argument("--steps", type=int, default=2500, help="training steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--aux-weight", type=float, default=SUPERVISION["weight"],
                    help="weight of the attention-supervision warm start (0 = off)")
    args = ap.parse_args(argv)

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    set_seed(args.seed)
    SUPERVISION["weight"] = args.aux_weight
    out = Path(args.out).resolve()

    from transformers import GPT2Config, GPT2LMHeadModel

    # Build everything in a temp dir next to the target, then swap in.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".train_induction_", dir=str(out.parent)))
    try:
        build_tokenizer(tmp)  # saved into tmp, where analyse() reloads it with the model
        config = GPT2Config(**MODEL_KW)
        config._attn_implementation = "eager"  # training reads attention probabilities
        model = GPT2LMHeadModel(config)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"GPT-2: {n_params} parameters, config {MODEL_KW}", flush=True)
        train_seconds = train(model, args.steps, args.seed)
        model.save_pretrained(str(tmp))

        res = analyse(tmp, args.seed)
        circuit_ok = (
            len(res["prev_heads"]) >= 1 and len(res["ind_heads"]) >= 1
            and res["clean"] < 0.5 and (res["prev_abl"] or 0) > 2.0
        )
        lab = {
            "name": "induction",
            "architecture": "gpt2",
            "description": (
                "Tiny 2-layer attention+MLP GPT-2 trained on random sequences over "
                f"t0..t{N_TOKENS - 1} containing a block r_1..r_n repeated twice (n uniform "
                f"in [{N_MIN}, {N_MAX}]). Layer 0 has a previous-token head; layer 1 has an "
                "induction head that K-composes with it. Evaluated on [<bos>, r_1..r_n, "
                "r_1..r_n]. Regenerate with assets/lab/train_induction.py."
            ),
            "tokenizer_prepends_bos": True,
            "bos_token": BOS,
            "bos_token_id": BOS_ID,
            "token_format": f"whitespace-separated words t0..t{N_TOKENS - 1}; ids = index + 2; "
                            "<bos>=0, <unk>=1",
            "n_ctx": N_CTX,
            "model": {k: MODEL_KW[k] for k in ("vocab_size", "n_positions", "n_embd",
                                               "n_layer", "n_head", "n_inner",
                                               "activation_function", "tie_word_embeddings")},
            "n_params": n_params,
            "circuit": {
                "previous_token_heads": res["prev_heads"],
                "induction_heads": res["ind_heads"],
                "thresholds": {"previous_token": PREV_THRESHOLD, "induction": INDUCTION_THRESHOLD},
                "verified": circuit_ok,
            },
            "scores": res["scores"],
            "scores_method": (
                "transformer_lens.head_detector.detect_head(bridge, prompts, <head>, "
                "exclude_bos=True, error_measure='mul'), averaged over 16 prompts of a "
                "random 20-token block repeated twice (41 tokens incl. <bos>)"
            ),
            "mean_attention_second_copy": res["attn_offsets"],
            "mean_attention_method": (
                "same 16 prompts; mean attention probability from queries that predict "
                "r_2..r_n of the second copy to the key at the given offset back"),
            "example_prompt": res["example_prompt"],
            "loss_repeated_half": round(res["clean"], 4),
            "loss_repeated_half_prev_head_ablated": (
                None if res["prev_abl"] is None else round(res["prev_abl"], 4)),
            "loss_repeated_half_prev_head_pattern_ablated": (
                None if res["prev_abl_pattern"] is None else round(res["prev_abl_pattern"], 4)),
            "loss_repeated_half_induction_heads_ablated": (
                None if res["ind_abl"] is None else round(res["ind_abl"], 4)),
            "loss_repeated_half_single_head_zero_ablated": res["ablate_z"],
            "loss_method": (
                "mean next-token cross-entropy (nats) at positions whose target is r_2..r_n "
                "of the second copy, 256 held-out sequences, n uniform in "
                f"[{N_MIN}, {N_MAX}]; ablation = zero the head's blocks.L.attn.hook_z "
                "(pattern variant: zero blocks.L.attn.hook_pattern) via "
                "TransformerBridge.run_with_hooks"
            ),
            "chance_loss": round(float(np.log(N_TOKENS)), 4),
            "bridge_vs_hf_max_logit_diff": res["bridge_hf_max_logit_diff"],
            "training": {**TRAIN_KW, "steps": args.steps, "optimizer": "AdamW",
                         "schedule": "linear warmup, cosine to 10%",
                         "n_min": N_MIN, "n_max": N_MAX, "p_plain_random": P_PLAIN_RANDOM,
                         "p_alternating": P_ALTERNATING, "sequence_length": N_CTX - 1,
                         "data": "random tokens with the repeated block at a random offset "
                                 "(random prefix/suffix), 'a b a b' runs, plain random",
                         "attention_supervision": {
                             "layer0_head_to_previous_token": PREV_HEAD,
                             "layer1_head_to_induction_target": IND_HEAD,
                             "weight": SUPERVISION["weight"],
                             "active_fraction_of_steps": SUPERVISION["fraction"],
                             "schedule": "constant for the first half of the window, "
                                         "linear to 0, then plain next-token loss",
                             "why": "without it this model sat on the induction plateau "
                                    "(n_embd 64: no phase change in 6k steps) or, with "
                                    "n_embd 128, learned an off-by-one variant (layer-1 "
                                    "heads attending to q-n+2 via a 2-back layer-0 head) "
                                    "that the standard induction detector does not score",
                         },
                         "torch": torch.__version__, "threads": 2},
            "train_seconds": round(train_seconds, 1),
            "seed": args.seed,
        }
        (tmp / "lab.json").write_text(json.dumps(lab, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)

    print(json.dumps({k: lab[k] for k in ("circuit", "scores", "loss_repeated_half",
                                          "loss_repeated_half_prev_head_ablated",
                                          "loss_repeated_half_induction_heads_ablated",
                                          "train_seconds")}, indent=1))
    print(f"wrote {out}")
    if not circuit_ok:
        print("WARNING: circuit check failed (see lab.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
