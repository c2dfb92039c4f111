"""Time one forward pass with hook reads on the nnsight engine against the TransformerBridge
engine (issue 21): the same model weights, the same prompt, the same reads, through
`Engine.run`. Prints each engine's median of --repeats timed runs (the engines alternate,
after --warmup untimed runs each), their ratio, and the plain Hugging Face forward pass
for scale.

    python benchmarks/bench_engines.py [--model smollm2] [--repeats 5] [--warmup 2] [--threads N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench.models import load_model  # noqa: E402

PROMPT = "The Eiffel Tower is located in the city of"


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
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bridge_model = load_model(args.model)
    nnsight_model = load_model(f"nnsight:{args.model}")
    ids = torch.tensor([bridge_model.tokenize(PROMPT)])
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
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "tokens": int(ids.shape[1]), "reads": list(reads), "seconds": times, "median": median, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
