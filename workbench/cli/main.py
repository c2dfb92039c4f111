"""The `workbench` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..disk import disk_bytes, human_bytes
from ..errors import InputError, WorkbenchError
from ..job_context import reporting
from ..outputs import check_output_file, check_store_output, write_or_rescue
from ..progress import run_to_completion
from ..prompts_file import read_prompts_file
from ..threads import apply_torch_threads

DEFAULT_MODEL = "smollm2"  # = workbench.models.DEFAULT_MODEL (a test keeps them equal); importing that loads torch, which `workbench plugins` need not


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import logging

        logging.getLogger("transformer_lens").setLevel(logging.ERROR)
    except ImportError:
        pass


def _bool_choice(value: str | None) -> bool | None:
    return None if value in (None, "auto") else value == "on"


def _load(args):
    from ..models import load_model

    print(f"loading {args.model} ...", file=sys.stderr)
    model = load_model(args.model, device=args.device, dtype=args.model_dtype, device_map=args.device_map, max_memory=args.max_memory)
    print(f"loaded {model.name} in {model.load_seconds:.1f} s (fingerprint {model.fingerprint})", file=sys.stderr)
    if model.placement.mapped:
        print(f"placed by {model.placement.describe()}: {model.device_map_summary}", file=sys.stderr)
    return model


def _add_model_args(parser: argparse.ArgumentParser, default_model: str | None = DEFAULT_MODEL) -> None:
    parser.add_argument("--model", default=default_model, help="smollm2, lab:NAME, a Hub id, a folder or a .gguf file")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    # Checked when the model loads (workbench.models.placement), so --help needs no torch.
    parser.add_argument("--device-map", default=None, metavar="auto", help="place the layers across GPUs, then CPU, then disk, instead of one --device (auto, balanced, balanced_low_0 or sequential)")
    parser.add_argument("--max-memory", default="", metavar="BUDGETS", help="with --device-map: a budget per device, e.g. 0=20GiB,1=20GiB,cpu=30GiB")
    parser.add_argument("--model-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--bos", default="auto", choices=["auto", "on", "off"], help="prepend the BOS token (auto: the tokenizer's own convention)")


def cmd_models(args) -> int:
    from ..models import available_models

    entries = available_models()
    if args.json:
        print(json.dumps([e.__dict__ for e in entries], indent=2))
        return 0
    width = max(len(e.spec) for e in entries) if entries else 10
    for entry in entries:
        print(f"{entry.spec:<{width}}  {entry.kind:<9}  {entry.description}")
    print("\nAlso loadable: a local Hugging Face folder, a .gguf file, or a Hub id (downloaded when online).")
    return 0


def _read_prompts(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        prompts += read_prompts_file(args.prompts_file)
    if not prompts:
        raise WorkbenchError("No prompts given.", "pass --prompt TEXT or --prompts-file FILE")
    return prompts


def cmd_cache(args) -> int:
    from tqdm import tqdm

    from ..capture import capture_activations

    prompts = _read_prompts(args)
    check_store_output(args.out, "--out")
    model = _load(args)
    job = capture_activations(
        model,
        prompts,
        args.hooks,
        args.out,
        storage_dtype=args.dtype,
        batch_size=args.batch_size,
        prepend_bos=_bool_choice(args.bos),
        compression=args.compression,
    )
    bar = tqdm(total=len(prompts), unit="prompt", file=sys.stderr, disable=len(prompts) < 2 or args.quiet)
    def show(progress) -> None:
        bar.n = int(progress.done)
        bar.refresh()

    try:
        result = run_to_completion(job, on_progress=show)
    except KeyboardInterrupt:
        job.close()
        print(f"\ninterrupted: the run in {args.out} is marked incomplete and will not be used", file=sys.stderr)
        return 130
    finally:
        bar.close()
    rate = result.n_tokens / result.seconds if result.seconds else 0.0
    print(
        f"wrote {result.run_id} to {result.path}: {result.n_prompts} prompts, {result.n_tokens} tokens, "
        f"{len(result.hooks)} hooks in {result.seconds:.1f} s ({rate:.0f} tokens/s)"
    )
    return 0


def cmd_inspect(args) -> int:
    from ..store import ActivationStore

    with ActivationStore(args.file) as store:
        runs = store.runs()
        if args.json:
            out = []
            for run in runs:
                summary = run.summary()
                if run.full_damage is None:
                    summary["hook_names"] = run.hooks
                    summary["prompt_texts"] = run.prompts()
                out.append(summary)
            from ..results import list_results

            results = [
                {"id": i.id, "kind": i.kind, "status": i.status, "title": i.title, "meta": json.loads(i.meta.to_json()) if i.meta else None}
                for i in list_results(store.handle)
            ]
            print(json.dumps({"file": str(args.file), "runs": out, "results": results}, indent=2))
            return 0
        _say(f"{args.file}: workbench store, {len(runs)} activation run(s), {human_bytes(disk_bytes(Path(args.file)))}")
        for run in runs:
            s = run.summary()
            state = s["status"] if s["status"] != "writing" else "INCOMPLETE (interrupted before it finished; never used)"
            if s["status"] == "interrupted":
                state = f"INCOMPLETE ({run.attrs.get('interrupted_reason', 'interrupted')}; never used)"
            if s["status"] == "damaged":
                _say(f"\n{run.id}  [DAMAGED ({s['damage']}): the process writing it was killed; never used]")
                if s["model"]:
                    _say(f"  model       {s['model']}  fingerprint {s['fingerprint']}  created {s['created']}")
                continue
            _say(f"\n{run.id}  [{state}]")
            _say(f"  model       {s['model']}  fingerprint {s['fingerprint']}")
            attrs = run.attrs
            _say(f"  created     {s['created']}  transformer-lens {attrs.get('transformer_lens_version')}  storage {s['storage_dtype']}")
            _say(f"  prompts     {s['prompts']} ({s['tokens']} tokens, BOS {'on' if attrs.get('prepend_bos') else 'off'})")
            for i in range(min(run.n_prompts, args.prompts)):
                text = run.prompt(i)
                _say(f"    [{i}] {text[:70]!r}{'...' if len(text) > 70 else ''}  ({run.length(i)} tokens)")
            if run.n_prompts > args.prompts:
                _say(f"    ... {run.n_prompts - args.prompts} more")
            hooks = run.hooks
            _say(f"  hooks       {len(hooks)}")
            for name in hooks[: args.hooks] if not args.all_hooks else hooks:
                ds = run.dataset(name)
                stored = ds.id.get_storage_size()
                _say(f"    {name:<36} {str(tuple(ds.shape)):<22} {ds.dtype}  {human_bytes(stored)}")
            if len(hooks) > args.hooks and not args.all_hooks:
                _say(f"    ... {len(hooks) - args.hooks} more (--all-hooks lists them)")
        _print_results(store)
    return 0


def _print_results(store) -> None:
    from ..results import list_results

    infos = list_results(store.handle)
    if not infos:
        return
    _say(f"\nresults ({len(infos)})")
    for info in infos:
        meta = info.meta
        state = "" if info.complete else "  [INCOMPLETE; never used]"
        where = f"{meta.model_spec} ({meta.model_fingerprint})" if meta else "unknown model"
        _say(f"  {info.id}  {info.kind:<28} {where}  {meta.created if meta else ''}{state}")
        if meta and meta.params:
            _say(f"    params  {json.dumps(meta.params)}")


def _printable(text: str) -> str:
    """Text from a file, safe for a terminal: control and format characters (escape
    sequences, bidirectional overrides) are shown escaped instead of acted on."""
    import unicodedata

    return "".join(
        c if c == "\n" or unicodedata.category(c) not in ("Cc", "Cf") else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


def _say(text: str) -> None:
    print(_printable(text))


def cmd_predict(args) -> int:
    from ..predict import predict_next

    if args.k < 1:
        raise WorkbenchError(f"-k {args.k} asks for no predictions.", "give -k 1 or more (default 10)")
    model = _load(args)
    result = predict_next(model, args.prompt, k=min(args.k, int(model.cfg.d_vocab)), prepend_bos=_bool_choice(args.bos))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"tokens ({len(result.tokens)}, BOS {'on' if result.prepend_bos else 'off'}): " + " | ".join(repr(t) for t in result.str_tokens))
    print("next token:")
    for text, token_id, p in result.top:
        print(f"  {p:7.2%}  {text!r}  (id {token_id})")
    return 0


def cmd_hooks(args) -> int:
    from ..hooks import catalog_for, describe_presets

    if args.pattern and not args.model:
        raise WorkbenchError("--pattern selects among a model's hook points, and no --model was given.", "add --model SPEC, e.g. --model smollm2")
    print("presets:")
    for name, text, patterns in describe_presets():
        print(f"  {name:<12} {text}: {', '.join(patterns)}")
    if args.model:
        model = _load(args)
        catalog = catalog_for(model.engine)  # on nnsight models: the names the engine seam reads
        specs = catalog.resolve(args.pattern) if args.pattern else catalog.specs
        print(f"\nhook points of {model.name} ({len(specs)}):")
        for spec in specs:
            alias = f"  (= {spec.canonical})" if spec.canonical != spec.name else ""
            print(f"  {spec.name}{alias}")
    return 0


def cmd_gui(args) -> int:
    # Imported only here: every other command stays Qt-free.
    from ..gui.app import main as gui_main

    return gui_main(args)


def cmd_plugins(args) -> int:
    from ..plugin_api import API_VERSION_TEXT, discover_plugins

    registry = discover_plugins()
    rows = [record.describe() for record in registry]
    if args.validate:
        return _validate_plugins(registry, rows, args.json)
    if args.json:
        print(json.dumps({"api_version": API_VERSION_TEXT, "plugins": rows}, indent=2))
        return 0
    if not rows:
        print("no plugins found")
        return 0
    width = max(len(r["id"]) for r in rows)
    for record in registry:
        version = record.version or "?"
        print(f"{record.id:<{width}}  {version:<8}  {record.status}")
        print(f"{'':<{width}}  {record.name} — {record.source}")
    print(f"\nplugin API {API_VERSION_TEXT}; more plugins: folders in WORKBENCH_PLUGIN_PATH, or packages with a 'workbench.plugins' entry point")
    return 0


def _validate_plugins(registry, rows: list[dict], as_json: bool) -> int:
    """Import every reference each plugin declares and check its run functions' signatures;
    exit 1 when a plugin is broken or has a problem."""
    from ..plugin_api.validate import validate_plugin

    failed = 0
    for record, row in zip(registry, rows):
        problems = [f"not loaded: {record.error}"] if not record.ok else validate_plugin(record.plugin)
        row["problems"] = problems
        failed += bool(problems)
        if not as_json:
            print(f"{record.id}: " + ("ok" if not problems else "PROBLEMS"))
            for problem in problems:
                print(f"  - {_printable(problem)}")
    if as_json:
        print(json.dumps({"plugins": rows}, indent=2))
    elif not failed:
        print(f"{len(rows)} plugin(s): every declared reference imports and every run function takes its parameters")
    return 1 if failed else 0


def cmd_run(args) -> int:
    from ..plugin_api import AnalysisContext, discover_plugins, estimate_cost, run_analysis, summary_json
    from ..plugin_api.params import parse_assignments
    from ..results import save_result

    registry = discover_plugins()
    plugin = registry.get(args.plugin)
    texts = parse_assignments(args.param)
    query_texts = parse_assignments(args.query_param)
    if plugin.analysis is None:
        raise WorkbenchError(f"Plugin {plugin.id!r} has a panel but no analysis to run headless.", "open it in the app instead")
    plugin.analysis.resolve(texts=texts)  # bad parameters fail before the model loads
    if args.query_param and not args.query:
        raise WorkbenchError("--query-param needs --query NAME.", f"{plugin.name}'s queries: {', '.join(q.name for q in plugin.queries) or 'none'}")
    if args.query:
        plugin.query(args.query).resolve(texts=query_texts)
    prompts = list(args.prompt or [])
    if plugin.analysis.needs_prompt and not prompts:
        raise WorkbenchError(f"{plugin.name} needs a prompt.", "pass --prompt TEXT")
    # Where the result goes is checked before the work, so an hour's result is not lost to a typo.
    out = check_store_output(args.out, "--out") if args.out else None
    json_path = check_output_file(args.json, "--json") if args.json else None
    model = _load(args)
    ctx = AnalysisContext(model=model, prompts=prompts, prepend_bos=_bool_choice(args.bos), store_path=Path(args.store) if args.store else None)
    if args.estimate:
        found = run_to_completion(estimate_cost(plugin, ctx, texts=texts))
        print(f"{plugin.name}: " + (found.describe() if found is not None else "states no cost estimate"))
        return 0
    job = run_analysis(plugin, ctx, texts=texts, go_on=args.yes)
    if args.query:
        job = _then_query(job, plugin, args.query, ctx, query_texts)
    result = _run_with_bar(job, args.quiet)
    if result is None:
        print("\ninterrupted: nothing was saved", file=sys.stderr)
        return 130
    summary = summary_json(result)
    problems = []
    if out is not None:
        where, result_id, problem = write_or_rescue(lambda path: save_result(path, result, title=plugin.name), out, "--out")
        summary["saved"] = {"file": str(where), "result": result_id}
        print(f"saved {result_id} to {where}", file=sys.stderr)
        problems.append(problem)
    text = json.dumps(summary, separators=(",", ":"))
    if len(text) < 200_000:  # indented when a person may read it; large matrices stay compact (MBs otherwise)
        text = json.dumps(summary, indent=2)
    if json_path is not None:
        where, _, problem = write_or_rescue(lambda path: path.write_text(text + "\n", encoding="utf-8"), json_path, "--json")
        print(f"wrote {where}", file=sys.stderr)
        problems.append(problem)
    else:
        print(text)
    return _report_problems(problems)


def _then_query(job, plugin, name: str, ctx, texts: dict):
    """Generator: the analysis, then its query `name` on the result (each half the bar)."""
    from ..plugin_api import run_query
    from ..progress import sub_job

    result = yield from sub_job(job, 0, 0.5, 1)
    return (yield from sub_job(run_query(plugin, name, ctx, result, texts=texts), 0.5, 0.5, 1, f"query {name}"))


def _report_problems(problems: list[str | None]) -> int:
    """Exit status 2 when an output went elsewhere than asked, each said in one line."""
    problems = [p for p in problems if p]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2 if problems else 0


def cmd_report(args) -> int:
    from ..plugin_api import discover_plugins
    from ..report import build_report, check_spec, default_data_path, load_spec, write_report

    spec = load_spec(args.spec, allow_outside=args.allow_outside_paths)
    registry = discover_plugins()
    check_spec(spec, registry)  # a typo fails here, before the model loads
    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise WorkbenchError(f"--out {out} is not an .html file.", "name the report REPORT.html (--pdf REPORT.pdf for a PDF)")
    if args.pdf and Path(args.pdf).suffix.lower() != ".pdf":
        raise WorkbenchError(f"--pdf {args.pdf} is not a .pdf file.", "name it REPORT.pdf")
    data = Path(args.data) if args.data else default_data_path(out)
    store = Path(args.store) if args.store else spec.store
    if store is not None and store.resolve() == data.resolve():
        raise WorkbenchError(f"The report's data file {data} would replace the activation store.", "give --data another file, or name the report differently")
    check_output_file(out, "--out")
    if args.pdf:
        check_output_file(args.pdf, "--pdf")
    check_output_file(data, "--data")  # replaced whole, so only writable, not a store
    if store is not None:
        check_store_output(store, "--store" if args.store else "the spec's store")
    job = build_report(spec, registry=registry, store_path=store, go_on=args.yes)
    report = _run_with_bar(job, args.quiet)
    if report is None:
        print("\ninterrupted: no report was written", file=sys.stderr)
        return 130
    written = write_report(report, out, data_path=data, spec_name=Path(args.spec).name)
    if args.pdf:
        from ..gui.report_pdf import write_pdf  # Qt, loaded only when a PDF is asked for

        written.pdf = Path(args.pdf)
        written.pages = write_pdf(report, written.pdf, spec_name=Path(args.spec).name)
    print(f"wrote {written.html} ({len(report.entries)} analyses in {report.seconds:.1f} s)", file=sys.stderr)
    print(f"wrote {written.data} (results; workbench inspect lists them, the app opens it as a workspace)", file=sys.stderr)
    if written.pdf:
        print(f"wrote {written.pdf} ({written.pages} pages)", file=sys.stderr)
    for entry in report.failed:
        print(f"error: {entry.title} ({entry.plugin_id}) failed: {entry.error.message}" + (f" ({entry.error.hint})" if entry.error.hint else ""), file=sys.stderr)
    return 1 if report.failed else 0


def cmd_store_compact(args) -> int:
    from ..store.compact import compact_store

    if args.out:
        check_output_file(args.out, "--out")
    done = compact_store(args.file, args.out)
    dropped = ", ".join(done.dropped_runs) or "none"
    print(
        f"compacted {args.file} into {done.path}: kept {len(done.kept_runs)} run(s) and {done.kept_results} result(s); "
        f"dropped incomplete runs: {dropped}" + (f" and {done.dropped_results} incomplete result(s)" if done.dropped_results else "")
    )
    print(f"{human_bytes(done.bytes_before)} -> {human_bytes(done.bytes_after)} on disk")
    return 0


def cmd_doctor(args) -> int:
    from ..doctor import diagnose

    if args.families:
        return _doctor_families(args)

    if args.json and args.json != "-":
        check_output_file(args.json, "--json")
    report = diagnose(print_line=None if args.json == "-" else print, self_check=not args.no_self_check)
    if args.json:
        text = json.dumps(report, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
            print(f"wrote {args.json}", file=sys.stderr)
    return 0 if report["ok"] else 1


def _doctor_families(args) -> int:
    from ..doctor.families import ANALYSES, family_matrix, matrix_markdown, with_readme_table
    from ..models.zoo import FAMILIES

    families = args.family or list(FAMILIES)
    analyses = args.analysis or list(ANALYSES)
    unknown = [f for f in families if f not in FAMILIES] + [a for a in analyses if a not in ANALYSES]
    if unknown:
        raise InputError(f"Unknown family or analysis: {', '.join(unknown)}.", f"families: {', '.join(FAMILIES)}; analyses: {', '.join(ANALYSES)}")
    if args.json and args.json != "-":
        check_output_file(args.json, "--json")
    quiet = args.json == "-"

    def show(cell) -> None:
        if not quiet:
            label = {"ok": "ok     ", "refused": "refused", "failed": "FAILED "}[cell.status]
            print(f"  {label} {cell.family:<8} {cell.analysis:<13} {cell.seconds:6.2f} s  {cell.detail}", flush=True)

    if not quiet:
        print(f"{len(analyses)} analyses on tiny random-weight models of {len(families)} families (zoo:<family>), each checked against an independent computation:")
    cells = family_matrix(families, analyses, report=show)
    failed = [c for c in cells if c.status == "failed"]
    table = matrix_markdown(cells)
    if not quiet:
        counts = {status: sum(c.status == status for c in cells) for status in ("ok", "refused", "failed")}
        print(f"\n{counts['ok']} ok, {counts['refused']} refused with a reason, {counts['failed']} failed\n")
        print(table)
    if args.readme:
        readme = Path(args.readme)
        readme.write_text(with_readme_table(readme.read_text(encoding="utf-8"), table), encoding="utf-8")
        print(f"wrote the table into {readme}", file=sys.stderr)
    if args.json:
        text = json.dumps({"cells": [c.to_dict() for c in cells], "ok": not failed}, indent=2, ensure_ascii=False)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
            print(f"wrote {args.json}", file=sys.stderr)
    return 1 if failed else 0


def cmd_new_plugin(args) -> int:
    from ..plugin_api.template import write_plugin_template

    folder = write_plugin_template(args.name, Path(args.dir))
    print(f"wrote plugin {args.name!r} in {folder}")
    print(f"try it:  WORKBENCH_PLUGIN_PATH={Path(args.dir).resolve()} workbench plugins")
    print(f"test it: python -m pytest {folder / 'tests'}")
    return 0


def _run_with_bar(job, quiet: bool):
    """Drive a job with a progress bar on stderr; None when Ctrl-C stopped it (the job is closed).

    The bar appears with the job's first progress report, so a request the job refuses
    at once gives its error alone, not after an empty bar."""
    from tqdm import tqdm

    bar = None

    def show(progress) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=100, unit="%", file=sys.stderr, disable=quiet, bar_format="{l_bar}{bar}| {elapsed}")
        bar.n = round(100 * progress.fraction)
        bar.set_description_str(progress.message[:40])
        bar.refresh()

    def status(message: str) -> None:  # a remote job's state (job_context.report_status)
        if bar is not None:
            bar.set_description_str(message[:40])
            bar.refresh()
        elif not quiet:
            print(message, file=sys.stderr)

    try:
        with reporting(status):
            return run_to_completion(job, on_progress=show)
    except KeyboardInterrupt:
        job.close()
        return None
    finally:
        if bar is not None:
            bar.close()


def _window_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and 320 <= int(width) <= 10000 and 240 <= int(height) <= 10000):
        raise argparse.ArgumentTypeError(f"{text!r} is not a window size: write WIDTHxHEIGHT in pixels, e.g. 1920x1080")
    return int(width), int(height)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Interpretability Workbench: look inside language models.")
    gui = parser.add_argument_group("desktop app (no command)")
    gui.add_argument("--screenshot", metavar="FILE.png", help="open the window, run --panel on --prompt, save a screenshot and exit")
    gui.add_argument("--model", dest="gui_model", metavar="SPEC", help="model to load at start")
    gui.add_argument("--prompt", dest="gui_prompt", metavar="TEXT", help="prompt to start with")
    gui.add_argument("--panel", dest="gui_panel", metavar="PLUGIN_ID", help="panel to open (and run, with --screenshot)")
    gui.add_argument("--workspace", dest="gui_workspace", metavar="FILE", help="workspace file to open")
    gui.add_argument("--panel-param", dest="gui_panel_params", action="append", metavar="NAME=VALUE", help="a parameter of --panel (repeat for several)")
    gui.add_argument("--run", dest="gui_run", action="store_true", help="run --panel once the model has loaded (what `make run` opens)")
    gui.add_argument("--window-size", dest="gui_window_size", type=_window_size, metavar="WxH", help="the window's size, e.g. 1920x1080 (default: 1400x880 for --screenshot)")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("models", help="list the models available offline now")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("cache", help="run a model over prompts and store chosen activations in an HDF5 file")
    _add_model_args(p)
    p.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    p.add_argument("--prompts-file", help="a text file with one prompt per line")
    p.add_argument("--hooks", action="append", required=True, help="hook names, globs (blocks.*.attn.hook_pattern) or presets (residual, attention, mlp, ...); comma-separated or repeated")
    p.add_argument("--out", required=True, help="the store file (.h5); runs are appended")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="storage precision")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--compression", default="none", choices=["none", "lzf", "gzip"], help="an HDF5 filter on top (patterns are always stored as packed lower triangles)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("inspect", help="what a store holds")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--prompts", type=int, default=5, help="how many prompts to list per run")
    p.add_argument("--hooks", type=int, default=8, help="how many hooks to list per run")
    p.add_argument("--all-hooks", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("predict", help="the prompt's tokens and the model's top next-token predictions")
    _add_model_args(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("hooks", help="list hook presets, and a model's hook points")
    _add_model_args(p, default_model=None)
    p.set_defaults(model=None)
    p.add_argument("--pattern", action="append", help="only hooks matching these names/globs/presets")
    p.set_defaults(func=cmd_hooks)

    p = sub.add_parser("plugins", help="list plugins with their version, source and status")
    p.add_argument("--json", action="store_true")
    p.add_argument("--validate", action="store_true", help="import every reference each plugin declares (panels too) and check its run functions' parameters")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("run", help="run a plugin's analysis headless")
    p.add_argument("plugin", metavar="PLUGIN_ID")
    _add_model_args(p)
    p.add_argument("--prompt", action="append", help="a prompt (repeat for analyses that read several)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="an analysis parameter (repeat for several)")
    p.add_argument("--out", metavar="FILE.h5", help="append the result to this HDF5 file")
    p.add_argument("--json", metavar="FILE", help="write the JSON summary here (default: print it)")
    p.add_argument("--store", metavar="FILE.h5", help="an activation store to reuse activations from")
    p.add_argument("--query", metavar="NAME", help="then run this follow-up query on the result (a drill-down, e.g. attention's 'pattern'); its answer is what is printed and saved")
    p.add_argument("--query-param", action="append", metavar="NAME=VALUE", help="a parameter of the query (repeat for several)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--estimate", action="store_true", help="print what the analysis would cost (forward passes, FLOPs, time here) and stop")
    p.add_argument("--yes", action="store_true", help="run even when the estimate is over 15 minutes (otherwise such a job is refused, with its estimate)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="run the analyses a report spec (TOML) names and write an HTML report, its data and a PDF")
    p.add_argument("spec", metavar="SPEC.toml", help="the report spec (examples/report.toml documents the format)")
    p.add_argument("--out", required=True, metavar="REPORT.html", help="the HTML report to write")
    p.add_argument("--pdf", metavar="REPORT.pdf", help="also write the report as a PDF")
    p.add_argument("--data", metavar="FILE.h5", help="where the results go (default: beside the HTML, REPORT.h5)")
    p.add_argument("--store", metavar="FILE.h5", help="an activation store to read and fill (default: the spec's store, else a temporary one)")
    p.add_argument("--allow-outside-paths", action="store_true", help="let the spec's files and store lie outside its folder (only for specs you trust)")
    p.add_argument("--yes", action="store_true", help="run analyses estimated over 15 minutes too (otherwise each is left out, with its estimate)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("store", help="maintain a store file")
    store_commands = p.add_subparsers(dest="store_command", required=True)
    q = store_commands.add_parser("compact", help="rewrite a store without its incomplete runs and results, reclaiming their space")
    q.add_argument("file", metavar="FILE.h5")
    q.add_argument("--out", metavar="NEW.h5", help="write the compacted store here instead of replacing FILE.h5")
    q.set_defaults(func=cmd_store_compact)

    p = sub.add_parser("doctor", help="versions, the lock, devices, the cache folder, and a self-check on the lab model (paste it into bug reports)")
    p.add_argument("--json", metavar="FILE", help="also write the diagnosis as JSON ('-': print only the JSON)")
    p.add_argument("--no-self-check", action="store_true", help="only report the installation")
    p.add_argument("--families", action="store_true", help="instead: run every analysis on a tiny model of every family in the zoo and check each against an independent computation")
    p.add_argument("--family", action="append", metavar="NAME", help="with --families: only this family (repeat for several)")
    p.add_argument("--analysis", action="append", metavar="ID", help="with --families: only this analysis (repeat for several)")
    p.add_argument("--readme", metavar="FILE", help="with --families: write the table into FILE's family-matrix section")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("new-plugin", help="write a working plugin package to start from")
    p.add_argument("name", help="the plugin's id (lower-case letters, digits, dashes)")
    p.add_argument("--dir", required=True, help="the folder to write it in (put it on WORKBENCH_PLUGIN_PATH)")
    p.set_defaults(func=cmd_new_plugin)
    return parser


def _second_interrupt_exits() -> None:
    """The first Ctrl-C stops the job cleanly (KeyboardInterrupt); a second one ends the
    process at once, even when a plugin swallowed the first. Stores stay safe: a run
    not marked complete is never served."""
    import signal

    pressed = 0

    def on_interrupt(signum, frame):
        nonlocal pressed
        pressed += 1
        if pressed > 1:
            os.write(2, b"\ninterrupted again: stopping now\n")
            os._exit(130)
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGINT, on_interrupt)
    except ValueError:  # not the main thread (main() called from a test thread): keep Python's handler
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    if args.command is None:
        try:
            return cmd_gui(args)
        except WorkbenchError as exc:
            print(_printable(f"error: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")), file=sys.stderr)
            return 2
    _second_interrupt_exits()
    try:
        apply_torch_threads()
        return args.func(args)
    except WorkbenchError as exc:
        print(_printable(f"error: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
