"""The uncentred second moment C = E[k kᵀ] of one layer's MLP keys over a text corpus.

Computed once per (unedited model, layer, corpus) and kept as one small HDF5 file per
entry under the cache folder, so later edits at that layer only read it. Each file is
written whole and then renamed into place: a kill mid-write leaves no half-written
entry, and an unreadable one is computed again rather than failing the edit.

ROME used Wikipedia (about 44M keys per layer); about 10 × d_mlp keys keep most of
the quality (Gupta et al. 2025).
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from ..disk import replacing
from ..engines import BridgeEngine
from ..errors import InputError
from ..paths import assets_dir, cache_dir
from ..progress import Progress
from .target import check_layer, mlp_output

SHIPPED_CORPUS = "corpus/smollm2-samples.txt"
KEYS_PER_DIMENSION = 10  # keys wanted per MLP dimension
CHUNK_TOKENS = 256  # tokens per corpus sequence (fewer when the model's context is shorter)
BATCH_SEQUENCES = 8
# A corpus the tokenizer mostly cannot read (the lab model's t0..t63 vocabulary meets
# English) is replaced by text sampled from the model itself.
MAX_UNKNOWN_SHARE = 0.2
STATS_FOLDER = "rome-key-stats"


@dataclass
class KeyStats:
    layer: int
    second_moment: np.ndarray  # [d_mlp, d_mlp] float32, uncentred E[k kᵀ]
    n_keys: int
    corpus: str  # what the keys came from, in words
    seconds: float  # time it took to compute (0 when read from the cache)
    from_cache: bool = False


def stats_folder() -> Path:
    return cache_dir() / STATS_FOLDER


def shipped_corpus() -> Path:
    return assets_dir() / SHIPPED_CORPUS


def _corpus_text(corpus: str) -> tuple[str, str]:
    """(text, label) of a corpus given as '' (the shipped one) or a file path."""
    path = Path(corpus).expanduser() if corpus else shipped_corpus()
    if not path.is_file():
        raise InputError(f"The corpus file {path} does not exist.", "give a UTF-8 text file (param corpus=PATH), or leave corpus empty for the shipped one")
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise InputError(f"The corpus file {path} is empty.", "give a text file with at least a few thousand words")
    return text, ("shipped:" + path.name) if not corpus else str(path)


def _unknown_share(model, ids: list[int]) -> float:
    unk = getattr(model.tokenizer, "unk_token_id", None)
    return 0.0 if unk is None or not ids else sum(1 for i in ids if i == unk) / len(ids)


@torch.no_grad()
def sample_tokens(model, n_tokens: int, seq_len: int, seed: int = 0) -> list[list[int]]:
    """Sequences sampled from the model itself (temperature 1) for models that cannot read the corpus."""
    generator = torch.Generator().manual_seed(seed)
    start = model.bos_token_id if model.bos_token_id is not None else 0
    n_seq = max(1, -(-n_tokens // seq_len))
    seqs = torch.full((n_seq, 1), start, dtype=torch.long)
    while seqs.shape[1] < seq_len:
        probs = torch.softmax(model.engine.run(seqs, logit_positions=[-1]).logits[:, -1].float().cpu(), dim=-1)
        seqs = torch.cat([seqs, torch.multinomial(probs, 1, generator=generator)], dim=1)
    return seqs.tolist()


def corpus_sequence_length(model) -> int:
    """Tokens per corpus sequence the key statistics are computed from."""
    return max(8, min(CHUNK_TOKENS, model.n_ctx))


def corpus_sequences(model, corpus: str, n_tokens: int) -> tuple[list[list[int]], str]:
    """Token sequences (at most n_tokens in all) to compute key statistics from, and their label."""
    seq_len = corpus_sequence_length(model)
    if corpus == "sample":
        return sample_tokens(model, n_tokens, seq_len), "sampled from the model"
    text, label = _corpus_text(corpus)
    ids = list(model.tokenizer(text, add_special_tokens=False)["input_ids"])
    if _unknown_share(model, ids) > MAX_UNKNOWN_SHARE:
        if corpus:
            raise InputError(f"{model.name}'s tokenizer cannot read most of {corpus}.", "give a corpus in the model's language, or corpus=sample")
        return sample_tokens(model, n_tokens, seq_len), "sampled from the model (it cannot read the shipped corpus)"
    bos = [model.bos_token_id] if model.tokenizer_prepends_bos and model.bos_token_id is not None else []
    body = seq_len - len(bos)
    seqs = [bos + ids[i : i + body] for i in range(0, len(ids), body)]
    seqs = [s for s in seqs if len(s) > len(bos) + 1]
    kept, total = [], 0
    for seq in seqs:
        if total >= n_tokens:
            break
        kept.append(seq)
        total += len(seq)
    return kept, label


def _corpus_key(model, corpus: str) -> str:
    if corpus in ("", "sample"):
        source = corpus or str(shipped_corpus())
        digest = hashlib.blake2b(Path(source).read_bytes(), digest_size=8).hexdigest() if corpus == "" and shipped_corpus().is_file() else corpus
        return f"{corpus or 'shipped'}-{digest}"
    data = Path(corpus).expanduser().read_bytes() if Path(corpus).expanduser().is_file() else corpus.encode()
    return "file-" + hashlib.blake2b(data, digest_size=8).hexdigest()


def entry_path(base_fingerprint: str, layer: int, corpus_key: str, n_tokens: int, folder: Path | None = None) -> Path:
    return (folder or stats_folder()) / base_fingerprint / f"layer{layer}-{corpus_key}-n{n_tokens}.h5"


def read_cached(base_fingerprint: str, layer: int, corpus_key: str, n_tokens: int, folder: Path | None = None) -> KeyStats | None:
    """The stored entry, or None when there is none or it cannot be read (it is then recomputed)."""
    path = entry_path(base_fingerprint, layer, corpus_key, n_tokens, folder)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            moment = f["second_moment"][()]
            stats = KeyStats(layer, moment, int(f.attrs["n_keys"]), str(f.attrs["corpus"]), 0.0, from_cache=True)
    except Exception:  # truncated, foreign or damaged: any failure means "not cached"
        return None
    return stats if moment.ndim == 2 and moment.shape[0] == moment.shape[1] else None


def _write_cache(stats: KeyStats, base_fingerprint: str, corpus_key: str, n_tokens: int, folder: Path | None = None) -> None:
    path = entry_path(base_fingerprint, stats.layer, corpus_key, n_tokens, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as partial, h5py.File(partial, "w") as f:
        f.create_dataset("second_moment", data=stats.second_moment, compression="gzip")
        f.attrs["n_keys"] = stats.n_keys
        f.attrs["corpus"] = stats.corpus
        f.attrs["seconds"] = stats.seconds


@contextmanager
def _unedited(model):
    """The model with every applied edit taken off, put back afterwards (bit-exact copies),
    so the statistics belong to the unedited weights whatever the edit history."""
    from .edits import EditStack

    stack = EditStack.existing(model)
    applied = list(stack.applied) if stack is not None else []
    for edit in reversed(applied):
        edit.restore_before()
    try:
        yield
    finally:
        for edit in applied:
            edit.restore_after()


def wanted_keys(model, n_tokens: int | None = None) -> int:
    """Corpus tokens the key statistics read: n_tokens, else KEYS_PER_DIMENSION per MLP dimension."""
    return int(n_tokens or KEYS_PER_DIMENSION * int(model.cfg.d_mlp))


def _entry(model, layer: int, corpus: str, n_tokens: int | None, folder: Path | None) -> tuple[str, int, str, int, Path | None]:
    """The cache entry's key: (base fingerprint, layer, corpus key, tokens, folder)."""
    from .edits import base_fingerprint

    return base_fingerprint(model), layer, _corpus_key(model, corpus), wanted_keys(model, n_tokens), folder


def statistics_cached(model, layer: int, corpus: str = "", n_tokens: int | None = None, folder: Path | None = None) -> bool:
    """Whether key_statistics would read this layer's statistics from the cache (the file
    exists; it is not opened, so asking costs nothing)."""
    return entry_path(*_entry(model, layer, corpus, n_tokens, folder)).is_file()


def key_statistics(model, layer: int, corpus: str = "", n_tokens: int | None = None, folder: Path | None = None):
    """Generator: yields Progress and returns KeyStats of layer's MLP keys (cached on disk).

    corpus: '' for the shipped corpus, 'sample' for text sampled from the model, or a file path.
    """
    on_bridge = isinstance(model.engine, BridgeEngine)
    # On TransformerBridge the keys come from the module ROME edits; another engine reads
    # them at the seam's mlp.hook_post (the input of that module) and sums them where it runs.
    target = mlp_output(model, layer) if on_bridge else None
    check_layer(model, layer)
    model.engine.check_edit(layer)
    d_mlp = int(model.cfg.d_mlp)
    base, _, corpus_key, n_tokens, _ = _entry(model, layer, corpus, n_tokens, folder)
    cached = read_cached(base, layer, corpus_key, n_tokens, folder)
    if cached is not None:
        return cached
    started = time.perf_counter()
    device = model.engine.device
    yield Progress(0, 1, "reading the corpus")
    seqs, label = corpus_sequences(model, corpus, n_tokens)
    total_tokens = sum(len(s) for s in seqs)
    if total_tokens < d_mlp:
        raise InputError(f"The corpus gives {total_tokens} tokens; the key statistics need at least {d_mlp} (d_mlp), better {KEYS_PER_DIMENSION * d_mlp}.", "give a longer corpus file")
    moment = torch.zeros(d_mlp, d_mlp, dtype=torch.float64)
    count, done = 0, 0
    batches = []
    for start in range(0, len(seqs), BATCH_SEQUENCES):
        batch = seqs[start : start + BATCH_SEQUENCES]
        width = max(len(s) for s in batch)
        ids = torch.tensor([s + [0] * (width - len(s)) for s in batch], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch], dtype=torch.bool)
        batches.append((ids, mask, sum(len(s) for s in batch)))
    # A remote model sums every batch in one job; here each batch is a step of the progress.
    groups = [batches] if model.engine.remote else [[b] for b in batches]
    with _unedited(model):
        for group in groups:
            if target is not None:
                ids, mask, _ = group[0]
                flat = target.keys_of(model.bridge, ids).float().cpu()[mask].double()
                moment += flat.T @ flat
                count += flat.shape[0]
            else:
                part, n = model.engine.second_moment([(ids, mask) for ids, mask, _ in group], f"blocks.{layer}.mlp.hook_post")
                moment += part
                count += n
            done += sum(n_tokens for _, _, n_tokens in group)
            yield Progress(done, total_tokens, f"key statistics of layer {layer}: {done} of {total_tokens} tokens")
    stats = KeyStats(layer, (moment / count).float().numpy(), count, label, time.perf_counter() - started)
    _write_cache(stats, base, corpus_key, n_tokens, folder)
    return stats
