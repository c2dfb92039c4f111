"""ROME on SmolLM2 over CounterFact-format sets: CounterFact scores, seconds per edit, and
the time to compute the key statistics C (in a fresh cache folder, so it is measured).

    .venv/bin/python benchmarks/bench_rome.py [--layer 4] [--cases 0] [--keep-cache] [--dataset FILE ...]

The sets default to examples/counterfact_smollm2.json (21 short prompts); the held-out-like
examples/counterfact_heldout_smollm2.json has longer prompts and subjects of several tokens.
Several sets run in one process, one after the other, so their times compare. Prints each
set's rome-eval summary (ES/PS/NS/S/EM/PM/NM, seconds_per_edit) and the C figures.

--baseline-cases N: after each set, its first N cases again as the peer runs ROME: the same
algorithm with every v* step a whole-model pass (kmeng01/rome's compute_v runs the model
from its embeddings with δ added by a hook; DeltaPass(full_pass=True) here, which projects
only the scored positions onto the vocabulary where the peer projects all, so the baseline
errs fast), in the same process. Prints seconds per edit of both on those cases, their
ratio, and the largest difference of the cases' metrics (whole passes round differently,
so not zero).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DATA = EXAMPLES / "counterfact_smollm2.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=4)
    parser.add_argument("--cases", type=int, default=0, help="first N cases only (0: all)")
    parser.add_argument("--gen-tokens", type=int, default=0, help="greedy tokens per generation prompt for fluency (0: skip)")
    parser.add_argument("--keep-cache", action="store_true", help="use the user cache (C may be cached already) instead of a fresh one")
    parser.add_argument("--dataset", type=Path, nargs="+", default=[DATA], help="CounterFact-format sets, run in this order (default: %(default)s)")
    parser.add_argument("--baseline-cases", type=int, default=0, help="time the whole-model v* pass on each set's first N cases too (0: skip)")
    parser.add_argument("--model", default="smollm2", help="model spec (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the --json summaries here, one per set")
    args = parser.parse_args()
    if not args.keep_cache:
        os.environ["WORKBENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-rome-")
    from workbench.editing.covariance import key_statistics
    from workbench.models import load_model
    from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis, summary_json
    from workbench.progress import run_to_completion

    started = time.perf_counter()
    model = load_model(args.model, device=args.device)
    print(f"model loaded in {time.perf_counter() - started:.1f} s")
    stats = run_to_completion(key_statistics(model, args.layer))
    c = stats.second_moment
    print(f"C of layer {args.layer}: {stats.n_keys} keys from {stats.corpus}, {c.shape[0]}x{c.shape[1]} float32 ({c.nbytes / 2**20:.1f} MiB), "
          f"computed in {stats.seconds:.1f} s" + (" (read from the cache)" if stats.from_cache else ""))
    plugin = discover_plugins().get("rome-eval")
    summaries = {}
    for dataset in args.dataset:
        print(f"{dataset.name}:")
        params = {"dataset": str(dataset), "layer": args.layer, "max_cases": args.cases, "gen_tokens": args.gen_tokens}
        result = run_to_completion(run_analysis(plugin, AnalysisContext(model, []), params, go_on=True), lambda p: print(f"  {p.message}", flush=True) if p.message.startswith("case") else None)
        out = summaries[dataset.name] = summary_json(result)
        for case in out["cases"]:
            print("  case {case_id}: ES {ES:.0f} PS {PS:.2f} NS {NS:.2f} EM {EM:+.3f} PM {PM:+.3f} NM {NM:+.3f} {seconds:.1f} s".format(**case))
        print("summary:", json.dumps(out["summary"]))
        if result.fluency is not None:
            print(f"fluency (GE): {result.fluency:.1f}")
        if args.baseline_cases:
            out["baseline"] = whole_pass_baseline(plugin, model, {**params, "max_cases": args.baseline_cases}, out["cases"][: args.baseline_cases])
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2) + "\n", encoding="utf-8")


def whole_pass_baseline(plugin, model, params: dict, ours: list[dict]) -> dict:
    """The same cases with every v* step a whole-model pass, and the comparison."""
    from unittest import mock

    from workbench.editing import rome
    from workbench.plugin_api import AnalysisContext, run_analysis, summary_json
    from workbench.progress import run_to_completion

    delta_pass = rome.DeltaPass

    def whole_model(*args, **kwargs):
        return delta_pass(*args, **{**kwargs, "full_pass": True})

    # compute_v builds its pass through this module attribute; nothing else changes.
    with mock.patch.object(rome, "DeltaPass", whole_model):
        cases = summary_json(run_to_completion(run_analysis(plugin, AnalysisContext(model, []), params, go_on=True)))["cases"]
    theirs_s = sum(case["seconds"] for case in cases) / len(cases)
    ours_s = sum(case["seconds"] for case in ours) / len(ours)
    worst = max(abs(a[key] - b[key]) for a, b in zip(ours, cases) for key in ("ES", "PS", "NS", "EM", "PM", "NM"))
    print(f"  whole-model v* pass on the first {len(cases)} cases: {theirs_s:.2f} s per edit against ours {ours_s:.2f} s, "
          f"{theirs_s / ours_s:.1f}x; largest metric difference {worst:.1e}")
    return {"cases": len(cases), "ours_seconds_per_edit": ours_s, "baseline_seconds_per_edit": theirs_s, "ratio": theirs_s / ours_s, "max_metric_difference": worst}


if __name__ == "__main__":
    main()
