"""Time one forward pass with hook reads on the nnsight engine against the TransformerBridge
engine (issue 21): the same model weights, the same prompt, the same reads, through
`Engine.run`. Prints each engine's median of --repeats timed runs (the engines alternate,
after --warmup untimed runs each), their ratio, and the plain Hugging Face forward pass
for scale.

Then counts the engine jobs each analysis makes, run as the app runs it (the plugin runner,
capture_activations): each `run` or `run_many` call is one job, on NDIF one round trip. The
NDIF count is taken on nnsight's simulation of NDIF (the analyses batch their runs as for a
remote model); the nnsight engine here runs them one job at a time, to show progress. The bridge's counts beside them are its engine jobs; attention and
caching stream from the bridge's own hooks instead, one pass per prompt or batch (plus a
two-token probe pass when caching). Causal tracing is counted with 3 samples (the app's
default is 10: 10 runs in the same one job on NDIF).

Then times causal tracing's engine path (engine_trace.py: whole passes with masked writes,
all that runs on nnsight) on both engines, the ratio being the nnsight engine's overhead on
a whole analysis, beside the bridge's fast path.

    python benchmarks/bench_engines.py [--model smollm2] [--repeats 5] [--warmup 2] [--threads N] [--json FILE] [--no-timing] [--no-round-trips] [--no-trace]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench.capture import capture_activations  # noqa: E402
from workbench.editing import EditStack  # noqa: E402
from workbench.editing.rome import _TEMPLATES  # noqa: E402
from workbench.models import load_model  # noqa: E402
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis  # noqa: E402
from workbench.predict import predict_next  # noqa: E402
from workbench.progress import run_to_completion  # noqa: E402

PROMPT = "The Eiffel Tower is located in the city of"
CORRUPTED = "The Colosseum is located in the city of"  # as many tokens as PROMPT on SmolLM2
CACHE_PROMPTS = [PROMPT, CORRUPTED, "The capital of France is", "Paris is a city in"] * 2  # 8 prompts: one batch


def count_runs(model) -> tuple[dict[str, int], dict[str, float]]:
    """Engine jobs per analysis (default parameters), each analysis as the app runs it, and
    the seconds each took."""
    calls, depth = [0], [0]

    def counted(real):
        # A job is one call of these; a call inside another (the bridge's second_moment runs) is part of it.
        def call(*args, **kwargs):
            calls[0] += depth[0] == 0
            depth[0] += 1
            try:
                return real(*args, **kwargs)
            finally:
                depth[0] -= 1

        return call

    counted_methods = ("_run_many", "fit_delta", "second_moment", "extend")
    for method in counted_methods:
        setattr(model.engine, method, counted(getattr(model.engine, method)))
    registry = discover_plugins()
    seconds: dict[str, float] = {}
    found: list = []

    def runs(name, job) -> int:
        calls[0] = 0
        started = time.perf_counter()
        found.append(run_to_completion(job))
        seconds[name] = time.perf_counter() - started
        return calls[0]

    def analysis(plugin_id, prompts, **params):
        return run_analysis(registry.get(plugin_id), AnalysisContext(model, prompts), params, go_on=True)

    def predictions():
        predict_next(model, PROMPT)
        yield from ()

    tmp = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    counts = {
        "predictions": runs("predictions", predictions()),
        "logit lens": runs("logit lens", analysis("logit-lens", [PROMPT])),
        "attention": runs("attention", analysis("attention", [PROMPT])),
        "caching (8 prompts: residual, attention, heads)": runs("caching", capture_activations(model, CACHE_PROMPTS, "residual,attention,heads", tmp / f"{model.engine.name}.h5")),
        "induction heads (default)": runs("induction", analysis("induction", [])),
        "causal tracing (3 samples)": runs("causal tracing", analysis("causal-trace", [PROMPT], subject="The Eiffel Tower", samples=3)),
        "patching (default targets)": runs("patching", analysis("patching", [PROMPT, CORRUPTED])),
    }
    # ROME from nothing cached: the context prefixes sampled and the key statistics computed.
    _TEMPLATES.clear()
    os.environ["WORKBENCH_CACHE_DIR"] = str(tmp / "cache")
    counts["ROME (one edit, layer 4, C computed)"] = runs("ROME", analysis("rome", [PROMPT], subject="Eiffel Tower", target_new="Rome", layer=4, gen_tokens=0))
    for method in counted_methods:
        delattr(model.engine, method)
    stack = EditStack.existing(model)
    if stack is not None and stack.applied:  # the bridge's edit went into the weights
        stack.undo()
    shutil.rmtree(tmp, ignore_errors=True)
    patching = found[-2]
    counts["patching: patched passes"] = patching.patched_passes
    counts["patching: passes with one batch per layer"] = per_layer_passes(patching, model)
    return counts, seconds


def simulated_ndif(nnsight_model):
    """The model with its sessions sent through nnsight's simulation of NDIF: an analysis
    batches its runs into jobs as it does for a remote model, so the jobs counted are NDIF's
    round trips."""
    import dataclasses

    from workbench.engines import NnsightEngine, RemoteMode

    engine = NnsightEngine(nnsight_model.engine.hf_model, nnsight_model.tokenizer, remote=RemoteMode.simulated())
    return dataclasses.replace(nnsight_model, engine=engine)


def per_layer_passes(result, model) -> int:
    """The patched passes of batches that never mix layers (the workbench before the seam):
    one per max_batch cells of each layer, the cells run being those whose value is not
    exactly the corrupted run's."""
    import math

    sys.path.insert(0, str(ROOT / "plugins"))
    from workbench_patching.patcher import chunk_size

    chunk = chunk_size(model.cfg, len(result.clean_tokens), int(result.meta.params.get("max_batch", 64)))
    total = 0
    for target in result.targets:
        grid = result.raw(target)
        for layer in range(grid.shape[0]):
            total += math.ceil(int(np.sum(grid[layer] != result.corrupted_value)) / chunk)
    return total


def reads_for(n_layers: int) -> dict[str, None]:
    """Five hook points spread over the model and over the kinds of hook point."""
    last = n_layers - 1
    return {
        "blocks.0.hook_resid_pre": None,
        f"blocks.{n_layers // 4}.attn.hook_pattern": None,
        f"blocks.{n_layers // 2}.hook_attn_out": None,
        f"blocks.{3 * n_layers // 4}.hook_mlp_out": None,
        f"blocks.{last}.hook_resid_post": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--no-timing", action="store_true", help="skip the timed forward passes")
    parser.add_argument("--no-round-trips", action="store_true", help="skip counting engine runs per analysis")
    parser.add_argument("--no-trace", action="store_true", help="skip timing causal tracing's engine path on both engines")
    parser.add_argument("--samples", type=int, default=10, help="noise samples of the timed causal trace")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bridge_model = load_model(args.model)
    nnsight_model = load_model(f"nnsight:{args.model}")
    ids = torch.tensor([bridge_model.tokenize(PROMPT)])

    report: dict = {"model": args.model, "tokens": int(ids.shape[1]), "layers": bridge_model.n_layers}
    if not args.no_timing:
        report.update(time_forward(args, bridge_model, nnsight_model, ids))
    if not args.no_round_trips:
        (ours, our_seconds), (theirs, their_seconds) = count_runs(nnsight_model), count_runs(bridge_model)
        remote, _ = count_runs(simulated_ndif(nnsight_model))
        print(f"engine jobs per analysis on {args.model} ({bridge_model.n_layers} layers; on NDIF each is a round trip)")
        for name, count in ours.items():
            print(f"  {name:50s} NDIF (simulated) {remote[name]:4d}   nnsight here {count:4d}   bridge {theirs[name]:4d}")
        print("seconds per analysis (one run each, not a timing benchmark): " + ", ".join(
            f"{name} nnsight {our_seconds[name]:.2f} / bridge {their_seconds[name]:.2f}" for name in our_seconds))
        report["runs"] = {"ndif_simulated": remote, "nnsight": ours, "bridge": theirs}
        report["analysis_seconds"] = {"nnsight": our_seconds, "bridge": their_seconds}
    if not args.no_trace:
        report["causal_trace"] = time_trace(args, bridge_model, nnsight_model)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def time_forward(args, bridge_model, nnsight_model, ids) -> dict:
    reads = reads_for(bridge_model.n_layers)
    hf = nnsight_model.engine.hf_model

    def timed(run) -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            run()
        return time.perf_counter() - started

    runs = {
        "bridge": lambda: bridge_model.engine.run(ids, reads=reads),
        "nnsight": lambda: nnsight_model.engine.run(ids, reads=reads),
        "hf": lambda: hf(ids),
    }
    for run in runs.values():
        for _ in range(args.warmup):
            timed(run)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(timed(run))
    median = {name: statistics.median(values) for name, values in times.items()}
    ratio = median["nnsight"] / median["bridge"]
    print(f"{args.model}, {ids.shape[1]} tokens, {len(reads)} hook reads ({', '.join(reads)}), torch threads {torch.get_num_threads()}")
    for name, values in times.items():
        print(f"  {name:8s} median {median[name] * 1000:7.1f} ms   runs {', '.join(f'{v * 1000:.1f}' for v in values)}")
    print(f"  nnsight / bridge: {ratio:.2f}   (bridge / plain HF forward: {median['bridge'] / median['hf']:.2f})")
    return {"reads": list(reads), "seconds": times, "median": median, "ratio": ratio}


def time_trace(args, bridge_model, nnsight_model) -> dict:
    """Causal tracing's engine path on each engine, and the bridge's fast path, in one run."""
    sys.path.insert(0, str(ROOT / "plugins"))
    from workbench_causal_trace.engine_trace import trace_on_engine
    from workbench_causal_trace.noise import subject_noise
    from workbench_causal_trace.request import build_request
    from workbench_causal_trace.scoring import KINDS
    from workbench_causal_trace.tracing import trace_with_noise

    seconds, scores = {}, {}
    for label, model, trace in (
        ("nnsight, engine path", nnsight_model, trace_on_engine),
        ("bridge, engine path", bridge_model, trace_on_engine),
        ("bridge, fast path", bridge_model, trace_with_noise),
    ):
        request = build_request(model, PROMPT, model.tokenize(PROMPT), "The Eiffel Tower", "")
        noise = subject_noise(model, request, args.samples, 0.0, 3.0, 1)
        started = time.perf_counter()
        with torch.inference_mode():
            result = run_to_completion(trace(model, request, noise, KINDS, 10))
        seconds[label] = time.perf_counter() - started
        scores[label] = np.stack([result.scores[kind] for kind in KINDS])
    worst = max(float(np.abs(scores[label] - scores["bridge, fast path"]).max()) for label in scores)
    print(f"causal tracing, {args.samples} samples, all kinds: " + ", ".join(f"{label} {value:.1f} s" for label, value in seconds.items()))
    print(f"  nnsight / bridge on the engine path: {seconds['nnsight, engine path'] / seconds['bridge, engine path']:.2f}; "
          f"nnsight engine path / bridge fast path: {seconds['nnsight, engine path'] / seconds['bridge, fast path']:.2f}; largest score difference {worst:.1e}")
    return {"seconds": seconds, "max_difference": worst, "samples": args.samples}


if __name__ == "__main__":
    main()
