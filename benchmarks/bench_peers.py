"""The headline analyses against what a researcher would run instead, one after another in
one run (`make bench`), then one table: our time, the peer-style baseline's, their ratio.

- causal tracing: benchmarks/bench_causal_trace.py (kmeng01/rome's algorithm on the plain
  Hugging Face model, benchmarks/peer_causal_trace.py), SmolLM2, Eiffel Tower, 10 samples,
  all three kinds;
- activation patching: benchmarks/bench_patching.py against transformer_lens.patching, on the
  Eiffel/Colosseum and the IOI pairs (TransformerLens timed on its first --tl-layers layers and
  scaled: its time is one whole pass per cell, linear in the layers);
- ROME: benchmarks/bench_rome.py, seconds per edit (edit, probes, restore) on the 21-case set
  and the held-out-like set, against the 10 s target; and on each set's first 3 cases against
  the same algorithm with whole-model v* passes, as kmeng01/rome's compute_v runs them.

Each runs in its own process, so none inherits another's memory or threads. Run alone: on 2
cores a second torch process slows both by 5-20x.

    python benchmarks/bench_peers.py [--quick] [--json FILE]

--quick: 2 noise samples, 1 TransformerLens layer, the first 3 cases of each ROME set (2 for
the whole-pass baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"


def run(script: str, *args: str) -> dict:
    """Run a benchmark script (its output shown as it goes) and read back its --json."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out.json"
        command = [sys.executable, str(HERE / script), *args, "--json", str(out)]
        print(f"\n$ {' '.join(command[1:])}", flush=True)
        subprocess.run(command, check=True)
        return json.loads(out.read_text(encoding="utf-8"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings, to check the benchmarks run")
    parser.add_argument("--json", help="also write the table here")
    args = parser.parse_args()
    samples, tl_layers = ("2", "1") if args.quick else ("10", "3")
    cases = ["--cases", "3"] if args.quick else []
    started = time.perf_counter()
    rows = []

    trace = run("bench_causal_trace.py", "--samples", samples)
    rows.append((f"causal tracing ({samples} samples, all kinds)", trace["ours_seconds"], trace["peer_seconds"], "kmeng01/rome's algorithm", f"max |diff| {trace['max_difference']:.1e}; at most {trace['bound_at_peak']:.1f}x at this CPU's peak"))
    for pair in ("eiffel", "ioi"):
        patching = run("bench_patching.py", "--pair", pair, "--tl-layers", tl_layers)
        ours = sum(row["ours_s"] for row in patching["rows"])
        theirs = sum(row["transformer_lens_s"] for row in patching["rows"])
        worst = max(row["max_abs_diff"] for row in patching["rows"])
        rows.append((f"activation patching ({pair} pair)", ours, theirs, "transformer_lens.patching", f"max |diff| {worst:.1e}"))
    sets = [str(EXAMPLES / "counterfact_smollm2.json"), str(EXAMPLES / "counterfact_heldout_smollm2.json")]
    rome = run("bench_rome.py", "--keep-cache", "--dataset", *sets, *cases, "--baseline-cases", "2" if args.quick else "3")
    for name, summary in rome.items():
        figures = summary["summary"]
        rows.append((f"ROME per edit ({name})", figures["seconds_per_edit"], None, "target: 10 s", f"ES {figures['ES']:.2f} PS {figures['PS']:.2f} NS {figures['NS']:.2f}"))
        base = summary["baseline"]
        rows.append((f"ROME per edit, its first {base['cases']} cases", base["ours_seconds_per_edit"], base["baseline_seconds_per_edit"], "whole-model v* passes",
                     f"max |metric diff| {base['max_metric_difference']:.1e}"))

    print(f"\nmake bench on {os.cpu_count()} cores, {time.perf_counter() - started:.0f} s in all, load average at the end {os.getloadavg()[0]:.2f}")
    print(f"{'analysis':48} {'ours s':>9} {'baseline s':>11} {'ratio':>7}  baseline; check")
    for name, ours, theirs, baseline, check in rows:
        ratio = f"{theirs / ours:6.1f}x" if theirs else "-"
        baseline_seconds = f"{theirs:.2f}" if theirs else "-"
        print(f"{name:48} {ours:9.2f} {baseline_seconds:>11} {ratio:>7}  {baseline}; {check}")
    if args.json:
        Path(args.json).write_text(json.dumps([dict(zip(("analysis", "ours_s", "baseline_s", "baseline", "check"), row)) for row in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
