"""Time the patching plugin against transformer_lens.patching's one-run-per-cell functions.

For each target, runs the plugin's analysis exactly as `workbench run patching` does
(on TransformerBridge each patched run starts at its cell's layer and position, cells
batched, unchanged cells skipped) and the matching
`transformer_lens.patching.get_act_patch_*` function on the same clean cache, metric
and corrupted tokens, then prints both times, their ratio and the largest difference.

    python benchmarks/bench_patching.py [--model smollm2] [--pair ioi|eiffel] [--targets all]
                                        [--tl-layers N] [--threads N] [--answers ' Paris, Rome'] [--device cuda] [--json FILE]

--tl-layers N times TransformerLens on the first N layers only (every cell there) and
scales its time to all layers: it runs one full forward pass per cell whatever the layer,
so its time is linear in the number of layers. The comparison of values then covers those
N layers. Without it, TransformerLens runs every cell (about 1800 passes on SmolLM2 with
the IOI pair and the default targets).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))

import transformer_lens.patching as tl_patching  # noqa: E402

from workbench.models import load_model  # noqa: E402
from workbench.plugin_api import AnalysisContext, run_analysis  # noqa: E402
from workbench.progress import run_to_completion  # noqa: E402
from workbench_patching import plugin  # noqa: E402
from workbench_patching.inputs import metric_values  # noqa: E402
from workbench_patching.targets import TARGETS, parse_targets  # noqa: E402

PAIRS = {
    "ioi": ("When John and Mary went to the store, John gave a drink to", "When John and Mary went to the store, Mary gave a drink to"),
    "eiffel": ("The Eiffel Tower is located in the city of", "The Colosseum is located in the city of"),
    "lab": ("t1 t2 t3 t4 t5 t6 t7 t8 t5", "t1 t2 t3 t4 t5 t9 t7 t8 t5"),
}
INDEX_COLUMNS = {"position": "pos", "head": "head_index"}


def tl_index(target, layers: int, n_positions: int, n_heads: int):
    import pandas as pd

    columns = ["layer"] + [INDEX_COLUMNS[axis] for axis in target.axes]
    rows = [(layer, *cell) for layer in range(layers) for cell in target.cells(n_positions, n_heads)]
    return pd.DataFrame(rows, columns=columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--pair", default="ioi", choices=sorted(PAIRS))
    parser.add_argument("--targets", default="all")
    parser.add_argument("--tl-layers", type=int, default=0, help="time TransformerLens on this many layers and scale (0: all)")
    parser.add_argument("--answers", default="", help="'clean,corrupted' answers, one token each (default: each run's top token)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default; the app uses cores - 1)")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(args.model, device=args.device)
    bridge = model.bridge
    clean, corrupted = PAIRS[args.pair]
    tl_layers = args.tl_layers or model.n_layers
    answers = dict(zip(("answer", "wrong_answer"), args.answers.split(","))) if args.answers else {}
    rows = []
    print(f"model {model.name}: {model.n_layers} layers x {model.n_heads} heads; pair {args.pair!r}; torch threads {torch.get_num_threads()}; load {os.getloadavg()[0]:.2f}")
    print(f"{'target':16} {'cells':>6} {'skipped':>7} {'passes':>6} {'ours s':>8} {'TL s':>9} {'ratio':>6} {'max |diff|':>10}")
    for name in parse_targets(args.targets):
        target = TARGETS[name]
        started = time.perf_counter()
        result = run_to_completion(run_analysis(plugin, AnalysisContext(model, [clean, corrupted]), {"targets": name, **answers}, go_on=True))
        ours = time.perf_counter() - started

        clean_ids = torch.tensor([result.clean_tokens.tolist()])
        corrupted_ids = torch.tensor([result.corrupted_tokens.tolist()])

        def metric(logits):
            return metric_values(logits, result.metric, result.answer_id, result.wrong_answer_id)[0]

        function = getattr(tl_patching, target.tl_function)
        n_positions = len(result.clean_tokens)
        started = time.perf_counter()
        with torch.inference_mode():
            _, cache = bridge.run_with_cache(clean_ids)
            if tl_layers == model.n_layers:
                reference = function(bridge, corrupted_ids, cache, metric).cpu().numpy()
            else:
                index = tl_index(target, tl_layers, n_positions, model.n_heads)
                flat = function(bridge, corrupted_ids, cache, metric, index_axis_names=None, index_df=index).cpu().numpy()
                reference = flat.reshape((tl_layers,) + target.shape(1, n_positions, model.n_heads)[1:])
        tl_seconds = (time.perf_counter() - started) * model.n_layers / tl_layers
        diff = float(np.abs(result.raw(name)[:tl_layers] - reference).max())
        row = {
            "target": name,
            "cells": int(np.prod(result.raw(name).shape)),
            "skipped": result.cells_skipped,
            "patched_passes": result.patched_passes,
            "ours_s": round(ours, 2),
            "transformer_lens_s": round(tl_seconds, 2),
            "transformer_lens_layers_timed": tl_layers,
            "ratio": round(tl_seconds / ours, 2),
            "max_abs_diff": diff,
        }
        rows.append(row)
        scaled = "*" if tl_layers < model.n_layers else " "
        print(f"{name:16} {row['cells']:6d} {row['skipped']:7d} {row['patched_passes']:6d} {ours:8.2f} {tl_seconds:8.2f}{scaled} {row['ratio']:6.2f} {diff:10.2e}", flush=True)
    total_ours = sum(r["ours_s"] for r in rows)
    total_tl = sum(r["transformer_lens_s"] for r in rows)
    print(f"{'total':16} {'':6} {'':7} {'':6} {total_ours:8.2f} {total_tl:9.2f} {total_tl / total_ours:6.2f}")
    if tl_layers < model.n_layers:
        print(f"* TransformerLens timed on layers 0..{tl_layers - 1} and scaled to {model.n_layers} layers; values compared there.")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": model.name, "pair": args.pair, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
