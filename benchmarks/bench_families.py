"""The peer comparisons on every family of the model zoo, one table: causal tracing against
kmeng01/rome's algorithm, activation patching against transformer_lens.patching, ROME
against whole-model v* passes, each with the largest difference of their numbers.

    python benchmarks/bench_families.py [--families gpt2,llama,...] [--device cuda] [--json FILE]

Zoo models are tiny and random (workbench.models.zoo), so their times say little about
speed-ups at scale (the fixed costs per pass dominate); what this shows is that every
benchmark runs on every family where the analysis runs, with equal numbers, and which
families an analysis refuses and why. Each benchmark runs in its own process
(benchmarks/bench_causal_trace.py, bench_patching.py, bench_rome.py); one that fails
is a row with its last line of output, never the end of the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
HELD_OUT = HERE.parent / "examples" / "counterfact_heldout_smollm2.json"


def run(script: str, *args: str) -> tuple[dict | None, str]:
    """(its --json, or None when it failed; its last line of output)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out.json"
        done = subprocess.run([sys.executable, str(HERE / script), *args, "--json", str(out)], capture_output=True, text=True)
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit status {done.returncode}"
        if "InputError: " in last:  # the analysis refused this model: its own message says why
            last = "refused: " + last.split("InputError: ", 1)[1]
        if done.returncode not in (0, 1) or not out.is_file():  # bench_causal_trace exits 1 when scores differ
            return None, last
        return json.loads(out.read_text(encoding="utf-8")), last


def _not_run(family: str, analysis: str, last: str) -> tuple[str, str, None, None, str]:
    """The row of a benchmark that did not finish: the analysis's refusal, or the failure."""
    return (family, analysis, None, None, last if last.startswith("refused") else f"failed: {last}")


def rows_for(family: str, device: list[str]) -> list[tuple[str, str, float | None, float | None, str]]:
    model = f"zoo:{family}"
    rows = []
    trace, last = run("bench_causal_trace.py", "--model", model, "--samples", "3", *device)
    if trace is None:
        rows.append(_not_run(family, "causal tracing", last))
    else:
        rows.append((family, "causal tracing", trace["ours_seconds"], trace["peer_seconds"], f"max |diff| {trace['max_difference']:.1e}"))
    # A random model often predicts one token after both prompts, which leaves the logit
    # difference of the top tokens 0 and patching refusing it: the answers are named.
    patching, last = run("bench_patching.py", "--model", model, "--pair", "eiffel", "--answers", " Paris, Rome", *device)
    if patching is None:
        rows.append(_not_run(family, "activation patching", last))
    else:
        worst = max(row["max_abs_diff"] for row in patching["rows"])
        ours, theirs = (sum(row[key] for row in patching["rows"]) for key in ("ours_s", "transformer_lens_s"))
        rows.append((family, "activation patching", ours, theirs, f"max |diff| {worst:.1e}"))
    rome, last = run("bench_rome.py", "--model", model, "--layer", "1", "--keep-cache", "--dataset", str(HELD_OUT), "--cases", "2", "--baseline-cases", "2", *device)
    if rome is None:
        rows.append(_not_run(family, "ROME per edit", last))
    else:
        base = next(iter(rome.values()))["baseline"]
        rows.append((family, "ROME per edit", base["ours_seconds_per_edit"], base["baseline_seconds_per_edit"], f"max |metric diff| {base['max_metric_difference']:.1e}"))
    return rows


def main() -> int:
    from workbench.models.zoo import FAMILIES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: %(default)s)")
    parser.add_argument("--json", help="also write the table here")
    args = parser.parse_args()
    device = ["--device", args.device]
    table = []
    for family in args.families.split(","):
        print(f"{family} ...", flush=True)
        table += rows_for(family, device)
    print(f"\n{'family':8} {'analysis':20} {'ours s':>8} {'peer s':>8} {'ratio':>7}  check")
    for family, analysis, ours, theirs, check in table:
        figures = f"{ours:8.2f} {theirs:8.2f} {theirs / ours:6.1f}x" if ours and theirs else f"{'-':>8} {'-':>8} {'-':>7}"
        print(f"{family:8} {analysis:20} {figures}  {check}")
    if args.json:
        Path(args.json).write_text(json.dumps([dict(zip(("family", "analysis", "ours_s", "peer_s", "check"), row)) for row in table], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
