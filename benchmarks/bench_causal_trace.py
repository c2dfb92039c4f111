"""Causal tracing: the reference algorithm (one pass per cell) against the fast path, in one run.

    python benchmarks/bench_causal_trace.py [--model smollm2] [--samples 10] [--device cpu|cuda]

Both use the same noise, so their scores must agree to float precision; the script
prints seconds per kind for each, the speed-up, and the largest score difference.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np
import torch

from workbench.models import load_model  # noqa: E402
from workbench_causal_trace.noise import subject_noise  # noqa: E402
from workbench_causal_trace.reference import timed, trace_reference  # noqa: E402
from workbench_causal_trace.request import build_request  # noqa: E402
from workbench_causal_trace.scoring import KINDS  # noqa: E402
from workbench_causal_trace.tracing import trace_with_noise  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompt", default="The Eiffel Tower is located in the city of")
    parser.add_argument("--subject", default="The Eiffel Tower")
    parser.add_argument("--target", default="", help="empty: the model's top next token")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    model = load_model(args.model, device=args.device) if args.device else load_model(args.model)
    request = build_request(model, args.prompt, model.tokenize(args.prompt), args.subject, args.target)
    noise = subject_noise(model, request, args.samples, 0.0, 3.0, seed=1)
    kinds = tuple(args.kinds.split(","))
    print(f"model {args.model} ({model.n_layers} layers) on {next(model.bridge.parameters()).device}, torch threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.1f}")
    print(f"prompt {model.str_tokens(request.token_ids)}; subject tokens {request.subject_range}; target {model.str_tokens(request.target_ids)}; "
          f"{args.samples} samples, noise {noise.level:.4f}")

    # The fast path traces all kinds together (they share passes); it runs before and
    # after the reference and its two timings are averaged. On a shared (virtual) machine
    # the speed drifts by tens of percent over minutes, and bracketing the reference
    # keeps a steady drift out of the ratio.
    first, first_seconds = timed(trace_with_noise(model, request, noise, kinds))
    print(f"fast path: {first_seconds:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in first.seconds.items())}); now the reference", flush=True)
    reference_seconds, worst = {}, 0.0
    for kind in kinds:
        (scores, high, low), reference_seconds[kind] = timed(trace_reference(model, request, noise, kind))
        worst = max(worst, float(np.abs(scores - first.scores[kind]).max()))
        assert abs(high - first.high_score) < 1e-4 and abs(low - first.low_score) < 1e-4, (high, first.high_score, low, first.low_score)
        print(f"  reference {kind}: {reference_seconds[kind]:.1f} s", flush=True)
    fast, second_seconds = timed(trace_with_noise(model, request, noise, kinds))
    print(f"fast path again: {second_seconds:.1f} s", flush=True)
    worst = max(worst, max(float(np.abs(fast.scores[k] - first.scores[k]).max()) for k in kinds))
    fast_seconds = {kind: (first.seconds[kind] + fast.seconds[kind]) / 2 for kind in kinds}

    print(f"P(target): clean {fast.high_score:.4f}, corrupted {fast.low_score:.4f}")
    print(f"{'kind':6} {'reference s':>12} {'fast s':>8} {'ratio':>7}")
    for kind in kinds:
        print(f"{kind:6} {reference_seconds[kind]:12.2f} {fast_seconds[kind]:8.2f} {reference_seconds[kind] / fast_seconds[kind]:7.1f}")
    total_reference, total_fast = sum(reference_seconds.values()), sum(fast_seconds.values())
    print(f"{'all':6} {total_reference:12.2f} {total_fast:8.2f} {total_reference / total_fast:7.1f}")
    passes = len(kinds) * (request.n_tokens * model.n_layers + 2)
    print(f"reference passes: {passes} of batch {args.samples + 1}; max |score difference| {worst:.2e}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
