"""Time and memory of the qk-ov whole-model tables (spectra, copying scores, self-top fractions, composition).

Runs the plugin's analysis exactly as `workbench run qk-ov` does, on SmolLM2-135M by
default (30 layers × 9 heads, vocabulary 49152), and reports the wall time of each
phase and the process's peak resident memory: the peak while the model loaded, and the
peak during the analysis (sampled every 10 ms from /proc/self/statm, and the kernel's
ru_maxrss high-water mark).

    python benchmarks/bench_qk_ov.py [--model smollm2] [--self-top-tokens 4096 0] [--json FILE]

--self-top-tokens takes one or more sample sizes (0: every token of the vocabulary).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))

from workbench.models import load_model  # noqa: E402
from workbench.plugin_api import AnalysisContext, run_analysis  # noqa: E402
from workbench_qk_ov import plugin  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * PAGE
    except OSError:
        return 0


def max_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


class PeakSampler:
    """Samples the resident set size in a thread; .peak is the largest seen."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def run_once(model, self_top_tokens: int, head: str) -> dict:
    ctx = AnalysisContext(model)
    phases: dict[str, float] = {}
    current, since = None, time.perf_counter()
    started = since
    with PeakSampler() as sampler:
        job = run_analysis(plugin, ctx, params={"head": head, "token_set": "top-norm", "self_top_tokens": self_top_tokens}, go_on=True)
        while True:
            try:
                progress = next(job)
            except StopIteration as stop:
                result = stop.value
                break
            phase = progress.message.split(",")[0]
            if phase != current:
                now = time.perf_counter()
                if current is not None:
                    phases[current] = phases.get(current, 0.0) + now - since
                current, since = phase, now
        if current is not None:
            phases[current] = phases.get(current, 0.0) + time.perf_counter() - since
    top = result.top_copying_heads(5)
    return {
        "self_top_tokens": result.self_top_tokens,
        "seconds_total": round(time.perf_counter() - started, 2),
        "seconds_tables": result.seconds_tables,
        "seconds_by_phase": {k: round(v, 2) for k, v in phases.items()},
        "peak_rss_mb_during": round(sampler.peak / 2**20, 1),
        "ru_maxrss_mb_after": round(max_rss_bytes() / 2**20, 1),
        "top_copying_heads": [[f"L{layer}H{h}", round(float(result.copying_score[layer, h]), 4), round(float(result.ov_self_top_fraction[layer, h]), 4)] for layer, h in top],
        "top_k_composition": [[f"L{a}H{b}", f"L{c}H{d}", round(s, 4)] for a, b, c, d, s in result.top_compositions("k", 5)],
        "baseline": [round(result.baseline_mean, 4), round(result.baseline_std, 4)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--self-top-tokens", type=int, nargs="+", default=[4096, 0])
    parser.add_argument("--head", default="0.0")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    before_load = rss_bytes()
    started = time.perf_counter()
    model = load_model(args.model)
    report = {
        "model": args.model,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_seconds": round(time.perf_counter() - started, 2),
        "rss_mb_before_load": round(before_load / 2**20, 1),
        "rss_mb_after_load": round(rss_bytes() / 2**20, 1),
        "ru_maxrss_mb_after_load": round(max_rss_bytes() / 2**20, 1),
        "runs": [],
    }
    for size in args.self_top_tokens:
        report["runs"].append(run_once(model, size, args.head))
        print(json.dumps(report["runs"][-1]), flush=True)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
