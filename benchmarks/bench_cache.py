"""Throughput of the activation store against a plain forward pass and in-memory run_with_cache.

SmolLM2-135M on 64 prompts of 128 tokens, for the residual-stream and
attention-pattern presets:
  (a) a plain forward pass            (no hooks)
  (b) run_with_cache in memory        (the same hooks, activations copied to CPU)
  (c) the HDF5 store                  (workbench.capture, writer thread, no compression: the default)
prints tokens/s of each and the ratios c/a and c/b (time ratios: 1.3 means 30% slower),
then the time to read one head's pattern for one prompt from the store (> 1 GB).

    python benchmarks/bench_cache.py [--json FILE] [--model smollm2] [--prompts 64] [--tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.capture import capture_activations  # noqa: E402
from workbench.cli.main import _quiet_libraries  # noqa: E402
from workbench.disk import disk_bytes  # noqa: E402
from workbench.hooks import HookCatalog  # noqa: E402
from workbench.models import load_model  # noqa: E402
from workbench.progress import run_to_completion  # noqa: E402
from workbench.store import ActivationStore  # noqa: E402


def make_prompts(model, n_prompts: int, n_tokens: int, seed: int = 0, lengths: tuple[int, int] | None = None) -> list[list[int]]:
    """Windows of English text (standard-library docs), tokenized: exactly n_tokens each,
    or, with lengths (low, high), a length drawn uniformly from that range for each."""
    import argparse as a
    import collections as c
    import email as e
    import http.server as h
    import json as j
    import logging as l
    import pathlib as p
    import threading as t

    text = "\n\n".join(m.__doc__ or "" for m in (a, c, e, h, j, l, p, t))
    text = "\n\n".join(text for _ in range(max(1, (n_prompts * n_tokens * 5) // max(1, len(text)) + 1)))
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    rng = random.Random(seed)
    sizes = [rng.randint(*lengths) if lengths else n_tokens for _ in range(n_prompts)]
    return [ids[s : s + size] for size, s in ((size, rng.randrange(0, len(ids) - size)) for size in sizes)]


def activation_bytes(path: Path, model) -> int:
    """What the store's runs hold, counted from the model's sizes and the prompts' lengths
    alone (not from how the store lays them out): the bytes a store without padding needs."""
    total = 0
    with ActivationStore(path) as store:
        for run in store.runs():
            lengths = np.array([run.length(i) for i in range(run.n_prompts)], dtype=np.int64)
            for hook in run.hooks:
                itemsize = run.dataset(hook).dtype.itemsize
                if hook.endswith("hook_pattern"):  # causal: the lower triangle of every head
                    total += itemsize * model.n_heads * int((lengths * (lengths + 1) // 2).sum())
                else:  # residual stream: d_model per position
                    total += itemsize * model.cfg.d_model * int(lengths.sum())
    return total


def batches(prompts, batch_size):
    """Batches as the store's capture forms them: longest prompts first, each batch right-padded
    to its longest (causal attention never lets a real token see the padding after it)."""
    ordered = sorted(prompts, key=len, reverse=True)
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start : start + batch_size]
        width = max(map(len, chunk))
        yield torch.tensor([list(p) + [0] * (width - len(p)) for p in chunk])


def time_plain(model, prompts, batch_size) -> float:
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in batches(prompts, batch_size):
            model.bridge(batch, return_type=None)
    return time.perf_counter() - started


def time_run_with_cache(model, prompts, batch_size, names) -> float:
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in batches(prompts, batch_size):
            _, cache = model.bridge.run_with_cache(batch, names_filter=names, return_type=None, device="cpu")
            del cache
    return time.perf_counter() - started


def time_store(model, prompts, batch_size, hooks, path) -> tuple[float, str]:
    started = time.perf_counter()
    result = run_to_completion(capture_activations(model, prompts, hooks, path, batch_size=batch_size))
    return time.perf_counter() - started, result.run_id


def time_head_reads(path: Path, run_id: str, n_layers: int, n_heads: int, n_prompts: int, reads: int = 100) -> dict:
    rng = random.Random(1)
    open_times, read_times = [], []
    for _ in range(reads):
        layer, head, prompt = rng.randrange(n_layers), rng.randrange(n_heads), rng.randrange(n_prompts)
        started = time.perf_counter()
        with ActivationStore(path) as store:
            run = store.run(run_id)
            opened = time.perf_counter()
            pattern = run.pattern(layer, head, prompt)
            read_times.append(time.perf_counter() - opened)
        open_times.append(opened - started)
        assert pattern.ndim == 2
    return {
        "read_ms_median": 1000 * statistics.median(read_times),
        "read_ms_max": 1000 * max(read_times),
        "open_and_read_ms_median": 1000 * statistics.median(o + r for o, r in zip(open_times, read_times)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--lengths", type=int, nargs=2, metavar=("LOW", "HIGH"), help="mixed prompt lengths drawn from LOW..HIGH instead of --tokens each")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="take the best of this many timings")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", help="keep the store at this path instead of a temporary file")
    args = parser.parse_args()
    _quiet_libraries()

    model = load_model(args.model)
    prompts = make_prompts(model, args.prompts, args.tokens, lengths=tuple(args.lengths) if args.lengths else None)
    n_tokens = sum(len(p) for p in prompts)
    catalog = HookCatalog(model.bridge)
    workdir = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    store_path = Path(args.keep) if args.keep else workdir / "bench.h5"
    if store_path.exists():
        store_path.unlink()
    figures = {
        "model": model.name,
        "prompts": args.prompts,
        "tokens_per_prompt": args.tokens,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "presets": {},
    }
    shape = f"{min(map(len, prompts))}-{max(map(len, prompts))} tokens (mean {n_tokens / len(prompts):.0f})" if args.lengths else f"{args.tokens} tokens"
    print(f"{model.name}: {args.prompts} prompts x {shape}, batch {args.batch_size}, {torch.get_num_threads()} torch threads")
    time_plain(model, prompts[: args.batch_size], args.batch_size)  # warm-up
    plain = min(time_plain(model, prompts, args.batch_size) for _ in range(args.repeats))
    figures["plain_tokens_per_s"] = n_tokens / plain
    print(f"(a) plain forward          {n_tokens / plain:9.0f} tokens/s  ({plain:.1f} s)")
    run_ids = {}
    for preset in ("residual", "attention"):
        names = [s.canonical for s in catalog.resolve(preset)]
        cached = min(time_run_with_cache(model, prompts, args.batch_size, names) for _ in range(args.repeats))
        stored_times = []
        for _ in range(args.repeats):
            seconds, run_ids[preset] = time_store(model, prompts, args.batch_size, [preset], store_path)
            stored_times.append(seconds)
        stored = min(stored_times)
        row = {
            "hooks": len(names),
            "run_with_cache_tokens_per_s": n_tokens / cached,
            "store_tokens_per_s": n_tokens / stored,
            "c_over_a": stored / plain,
            "c_over_b": stored / cached,
        }
        figures["presets"][preset] = row
        print(f"[{preset}: {len(names)} hooks]")
        print(f"(b) run_with_cache         {n_tokens / cached:9.0f} tokens/s  ({cached:.1f} s)")
        print(f"(c) HDF5 store             {n_tokens / stored:9.0f} tokens/s  ({stored:.1f} s)")
        print(f"    c/a = {row['c_over_a']:.2f}   c/b = {row['c_over_b']:.2f}   (target c/b <= 1.3)")
    size = store_path.stat().st_size
    on_disk = disk_bytes(store_path)
    needed = activation_bytes(store_path, model)
    figures["store_over_activations"] = on_disk / needed
    print(f"the store takes {on_disk / 2**20:.1f} MiB on disk for {needed / 2**20:.1f} MiB of activations: {on_disk / needed:.3f}x (target <= 1.05)")
    reads = time_head_reads(store_path, run_ids["attention"], model.n_layers, model.n_heads, args.prompts)
    figures["store_bytes"] = size
    figures["head_read"] = reads
    print(
        f"read one head's pattern for one prompt from a {size / 2**30:.2f} GiB store: "
        f"median {reads['read_ms_median']:.2f} ms, max {reads['read_ms_max']:.2f} ms "
        f"(with opening the file: {reads['open_and_read_ms_median']:.2f} ms; target < 20 ms)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if not args.keep:
        store_path.unlink(missing_ok=True)
        workdir.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
