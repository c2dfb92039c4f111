"""How load time, peak memory and analysis time grow with model size and prompt length.

Models are built from the real configs of SmolLM2-135M/360M/1.7B, Llama-3.2-1B and
Llama-3.1-8B with random weights, directly in bfloat16 (never materialised in float32),
saved once as safetensors folders under the cache, then loaded through `load_model` like
any checkpoint folder. Each model is measured in a fresh process:

- load: wall time and peak RSS of `load_model(folder, dtype)`;
- then, each after the peak-RSS counter is reset (Linux /proc/self/clear_refs):
  next-token predictions, logit lens, attention patterns captured into the HDF5 store,
  activation patching of the residual stream (a prompt pair differing in its last
  words, so only the cells the corruption reaches run), and one causal-trace token row.

With --tokens, the same analyses on SmolLM2-135M against prompt length.

It writes docs/benchmarks/scaling.json and log-log PNG plots of time and peak memory
against parameters and against tokens, with the ideal slopes drawn (1: linear; 2:
quadratic). The baseline of a slope is the model's own smallest point; ratios in one run.

    python benchmarks/bench_scaling.py [--models smollm2-135m,llama-3.2-1b] [--dtype bfloat16]
                                       [--tokens 16,64,256,1024,4096] [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CONFIGS = {
    # Each is the published config's shape (hidden, layers, heads, KV heads, MLP, vocab, tied).
    "smollm2-135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0),
    "smollm2-360m": dict(hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5, intermediate_size=2560, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0),
    "llama-3.2-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
    "smollm2-1.7b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32, intermediate_size=8192, vocab_size=49152, tie_word_embeddings=True, rope_theta=130000.0),
    "llama-3.1-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),
}
SENTENCE = "The Eiffel Tower is located in the city of Paris, which is the capital of France and home to many museums. "
PREDICT_TOKENS = 32
GIB = 1024**3


def model_folder(name: str, dtype: str) -> Path:
    from workbench.paths import cache_dir

    return cache_dir() / "bench-scaling" / f"{name}-{dtype}"


def build(name: str, dtype: str) -> Path:
    """The model's folder, built once: random weights made in dtype, written as safetensors."""
    import torch
    import transformers

    from workbench.models.gguf_cache import convert_gguf, embedded_gguf_path

    folder = model_folder(name, dtype)
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(convert_gguf(embedded_gguf_path())), local_files_only=True)
    settings = dict(CONFIGS[name])
    rope = {"rope_type": "default", "rope_theta": settings.pop("rope_theta")}
    config = transformers.LlamaConfig(rope_parameters=rope, max_position_embeddings=8192, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **settings)
    config.architectures = ["LlamaForCausalLM"]
    torch_dtype = getattr(torch, dtype)
    started = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)  # every parameter is created in dtype: no float32 copy
    try:
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    partial = folder.with_name(folder.name + ".partial")
    model.save_pretrained(partial, max_shard_size="2GB")
    tokenizer.save_pretrained(partial)  # SmolLM2's: Llama-3's larger vocabulary is simply never fully used
    partial.rename(folder)
    print(f"  built {name} ({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, {dtype}) in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def build_in_child(name: str, dtype: str) -> Path:
    """build() in its own process: the builder's memory (16 GB for 8B) is given back to the
    system before the measuring process loads the model, not kept by this one's allocator."""
    folder = model_folder(name, dtype)
    if not ((folder / "config.json").is_file() and any(folder.glob("*.safetensors"))):
        root = str(Path(__file__).resolve().parent.parent)
        code = f"import sys; sys.path.insert(0, {root!r}); from benchmarks.bench_scaling import build; build({name!r}, {dtype!r})"
        subprocess.run([sys.executable, "-c", code], check=True)
    return folder


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _prompt(model, n_tokens: int, tail: str = "") -> str:
    repeats = n_tokens // len(model.tokenize(SENTENCE)) + 2
    ids = model.tokenize(SENTENCE * repeats)[:n_tokens]
    return model.decode(ids[: n_tokens - len(model.tokenize(tail))] if tail else ids) + tail


def measure(folder: str, dtype: str, n_tokens: int, which: list[str]) -> dict:
    """In this process: load the model, then each analysis with its own peak RSS."""
    import torch

    from workbench.capture import capture_activations
    from workbench.models import load_model
    from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis
    from workbench.predict import predict_next
    from workbench.progress import run_to_completion

    torch.set_num_threads(os.cpu_count() or 1)
    out: dict = {}
    _reset_peak()
    base = _peak_bytes()
    started = time.perf_counter()
    model = load_model(folder, dtype=dtype)
    out["load"] = {"seconds": time.perf_counter() - started, "peak_rss": _peak_bytes()}
    out["rss_after_imports"] = base  # Python, torch, transformers and the workbench, before any weight
    unique = {p.data_ptr(): p for p in model.bridge.original_model.parameters()}.values()  # tied tensors once
    out["parameters"] = sum(p.numel() for p in unique)
    out["weight_bytes"] = sum(p.numel() * p.element_size() for p in unique)
    registry = discover_plugins()
    prompt = _prompt(model, n_tokens)
    out["tokens"] = len(model.tokenize(prompt))
    scratch = tempfile.mkdtemp(prefix="bench-scaling-")
    corrupted_tail, clean_tail = " is in Rome", " is in Paris"

    def job(name):
        if name == "predictions":
            return predict_next(model, prompt, k=10)
        if name == "logit-lens":
            return run_to_completion(run_analysis(registry.get("logit-lens"), AnalysisContext(model, [prompt]), {"top_k": 3}, go_on=True))
        if name == "attention-capture":
            return run_to_completion(capture_activations(model, [prompt], ["attention"], Path(scratch) / "attention.h5", storage_dtype="float16"))
        if name == "patching":
            pair = [_prompt(model, n_tokens, clean_tail), _prompt(model, n_tokens, corrupted_tail)]
            return run_to_completion(run_analysis(registry.get("patching"), AnalysisContext(model, pair), {"targets": "resid_pre", "metric": "prob", "max_batch": 8}, go_on=True))
        if name == "causal-trace-row":
            # The whole trace of the 10-token Eiffel prompt (residual stream, 2 samples); the
            # figure kept is its time per token row (all layers of one token).
            eiffel = "The Eiffel Tower is located in the city of"
            traced = run_to_completion(run_analysis(registry.get("causal-trace"), AnalysisContext(model, [eiffel]), {"subject": "The Eiffel Tower", "samples": 2, "kinds": "resid"}, go_on=True))
            return len(traced.tokens)
        raise KeyError(name)

    for name in which:
        _reset_peak()
        started = time.perf_counter()
        try:
            rows = job(name)
            seconds = time.perf_counter() - started
            out[name] = {"seconds": seconds / rows if name == "causal-trace-row" else seconds, "peak_rss": _peak_bytes()}
        except Exception as exc:  # a benchmark reports, it does not stop
            out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        print(f"    {name:<18} {json.dumps(out[name])}", flush=True)
    return out


def run_child(folder: Path, dtype: str, n_tokens: int, which: list[str]) -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    code = (
        f"import json, sys; sys.path.insert(0, {root!r}); from benchmarks.bench_scaling import measure; "
        f"print('RESULT ' + json.dumps(measure({str(folder)!r}, {dtype!r}, {n_tokens:d}, {which!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("    "):
            print(line, flush=True)
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (done.stderr or done.stdout)[-800:]}


def slope(xs: list[float], ys: list[float]) -> float | None:
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx if sxx else None


def plot(path: Path, title: str, x_label: str, xs: list[float], series: dict[str, list[float | None]], ideal: dict[str, float], y_label: str = "seconds") -> None:
    """A log-log line chart as PNG (SVG drawn by the workbench's own figure code, rendered by Qt)."""
    from workbench.figures.svg import line_chart

    lx = [math.log10(x) for x in xs]
    short = {"attention-capture": "attention store", "causal-trace-row": "trace token row"}
    lines = {short.get(name, name): [math.log10(v) if v else float("nan") for v in values] for name, values in series.items()}
    anchor = next((values for values in series.values() if values and values[0]), None)
    if anchor is not None:
        for name, exponent in ideal.items():
            lines[name] = [math.log10(anchor[0]) + exponent * (x - lx[0]) for x in lx]
    svg = line_chart(lines, x=lx, title=title, x_title=f"log10 {x_label}", y_title=f"log10 {y_label}", width=720, height=420)
    try:
        from PySide6.QtCore import QByteArray
        from PySide6.QtGui import QGuiApplication, QImage, QPainter
        from PySide6.QtSvg import QSvgRenderer

        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        _app = QGuiApplication.instance() or QGuiApplication([])
        renderer = QSvgRenderer(QByteArray(svg.encode("utf-8")))
        size = renderer.defaultSize()
        image = QImage(size.width() * 2, size.height() * 2, QImage.Format_ARGB32)
        image.fill(0xFFFFFFFF)
        painter = QPainter(image)
        renderer.render(painter)
        painter.end()
        image.save(str(path))
    except ImportError:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CONFIGS))
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--tokens", default="", help="prompt lengths for the SmolLM2-135M sweep, e.g. 16,64,256,1024,4096")
    parser.add_argument("--analyses", default="predictions,logit-lens,attention-capture,patching,causal-trace-row")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "benchmarks"))
    args = parser.parse_args()
    which = args.analyses.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"dtype": args.dtype, "machine": f"{os.cpu_count()} cores", "models": {}, "tokens": {}}
    previous = out / "scaling.json"
    if previous.is_file():  # runs add to each other (the 8B model is measured on its own)
        earlier = json.loads(previous.read_text(encoding="utf-8"))
        if earlier.get("dtype") == args.dtype:
            report["models"].update(earlier.get("models", {}))
            report["tokens"].update(earlier.get("tokens", {}))
    for name in [m for m in args.models.split(",") if m]:
        print(f"{name}:", flush=True)
        folder = build_in_child(name, args.dtype)
        report["models"][name] = run_child(folder, args.dtype, PREDICT_TOKENS, which)
    for n in [int(t) for t in args.tokens.split(",") if t]:
        print(f"smollm2-135m at {n} tokens:", flush=True)
        report["tokens"][str(n)] = run_child(build_in_child("smollm2-135m", args.dtype), args.dtype, n, which)
    (out / "scaling.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    summarise(report, out, which)
    return 0


def summarise(report: dict, out: Path, which: list[str]) -> None:
    models = {k: v for k, v in report["models"].items() if "parameters" in v}
    if len(models) >= 2:
        xs = [v["parameters"] for v in models.values()]
        times = {a: [v.get(a, {}).get("seconds") for v in models.values()] for a in ["load", *which]}
        memory = {a: [v.get(a, {}).get("peak_rss") for v in models.values()] for a in ["load", *which]}
        plot(out / "time-vs-parameters.png", f"time (s) vs parameters, {report['dtype']}", "parameters", xs, times, {"slope 1": 1.0})
        memory["weights"] = [v["weight_bytes"] for v in models.values()]
        memory["1.25 × weights"] = [1.25 * v["weight_bytes"] for v in models.values()]
        plot(out / "memory-vs-parameters.png", f"peak RSS (bytes) vs parameters, {report['dtype']}", "parameters", xs, memory, {}, "bytes")
        print("\nfitted log-log slope of time against parameters (1 = linear):")
        for analysis, values in times.items():
            s = slope(xs, values)  # type: ignore[arg-type]
            print(f"  {analysis:<18} {s:.2f}" if s is not None else f"  {analysis:<18} -")
        print("\npeak RSS / weight bytes:")
        for name, v in models.items():
            ratios = ", ".join(f"{a} {v[a]['peak_rss'] / v['weight_bytes']:.2f}" for a in ["load", *which] if "peak_rss" in v.get(a, {}))
            print(f"  {name:<14} {v['weight_bytes'] / GIB:6.2f} GiB of weights, {v.get('rss_after_imports', 0) / GIB:.2f} GiB before loading: {ratios}")
    lengths = {v["tokens"]: v for v in report["tokens"].values() if "parameters" in v}  # the prompt's real length
    if len(lengths) >= 2:
        xs = sorted(lengths)
        swept = [a for a in which if a != "causal-trace-row"]  # the trace reads its own 10-token prompt
        times = {a: [lengths[n].get(a, {}).get("seconds") for n in xs] for a in swept}
        memory = {a: [lengths[n].get(a, {}).get("peak_rss") for n in xs] for a in swept}
        plot(out / "time-vs-tokens.png", "SmolLM2-135M: time (s) vs prompt tokens", "tokens", xs, times, {"slope 1": 1.0, "slope 2": 2.0})
        plot(out / "memory-vs-tokens.png", "SmolLM2-135M: peak RSS (bytes) vs prompt tokens", "tokens", xs, memory, {"slope 1": 1.0, "slope 2": 2.0}, "bytes")
        print("\nlog-log slope of time against prompt tokens (1 linear, 2 quadratic): fitted over all, then between neighbouring lengths")
        for analysis, values in times.items():
            s = slope(xs, values)  # type: ignore[arg-type]
            local = [slope(xs[i : i + 2], values[i : i + 2]) for i in range(len(xs) - 1)]  # type: ignore[arg-type]
            steps = "  ".join(f"{xs[i]}→{xs[i + 1]}: {v:.2f}" for i, v in enumerate(local) if v is not None)
            print(f"  {analysis:<18} {s:.2f}   {steps}" if s is not None else f"  {analysis:<18} -")


if __name__ == "__main__":
    raise SystemExit(main())
