"""`workbench report`: specs, running every built-in plugin into one report, HTML, PDF and data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from workbench.cli.main import main
from workbench.errors import InputError
from workbench.plugin_api import ENTRY_POINT_GROUP, Figure, ReportSection, Table, discover_plugins
from workbench.progress import run_to_completion
from workbench.report import ReportEntry, build_report, parse_spec, render_html, report_from_results
from workbench.report.build import Report
from workbench.report.pagination import Block, paginate
from workbench.report.spec import check_spec, load_spec
from workbench.results import load_results

PROMPT = "t1 t2 t3 t4 t1 t2 t3"

# Per built-in plugin, what its [[analysis]] table holds in the every-plugin report: small
# parameters so the lab model runs it in seconds. Keys are those of a spec's [[analysis]]
# (params, files, prompts); "files" paths are relative to tests/. A built-in plugin missing
# here runs with its defaults.
SMALL = {
    "logit-lens": {"params": {"top_k": 3}},
    "attention": {"params": {"layer": 1, "head": 1}},
    "induction": {"params": {"batch": 2}},
    "qk-ov": {"params": {"top_k": 8, "self_top_tokens": 16}},
    "patching": {"params": {"corrupted": "t1 t2 t3 t5 t1 t2 t3"}},
    "causal-trace": {"params": {"subject": "t2 t3", "samples": 4}},
    # The lab model knows no facts; ROME rewrites what its induction circuit copies. Its MLP
    # outputs are small, so the clamp and the norm penalty are looser than the defaults.
    "rome": {
        "prompts": ["t1 t2 t3 t4 t1 t2 t3"],
        "params": {"subject": "t3", "target_new": "t9", "target_true": "t4", "layer": 0, "v_steps": 10, "v_weight_decay": 0.01,
                   "clamp_norm_factor": 40.0, "short_prefixes": 2, "long_prefixes": 2, "gen_tokens": 4},
    },
    "rome-eval": {
        "params": {"layer": 0, "v_steps": 10, "v_weight_decay": 0.01, "clamp_norm_factor": 40.0, "short_prefixes": 2, "long_prefixes": 2},
        "files": {"dataset": "data/counterfact_lab.json"},
    },
}


def builtin_plugin_ids() -> list[str]:
    return sorted(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.dist is not None and ep.dist.name == "interpretability-workbench")


def _toml(value) -> str:
    return json.dumps(value)  # JSON strings, numbers, booleans and lists are TOML too


def analysis_toml(plugin_id: str, entry: dict, base: Path) -> str:
    lines = ["[[analysis]]", f"plugin = {_toml(plugin_id)}"]
    if "prompts" in entry:
        lines.append(f"prompts = {_toml(entry['prompts'])}")
    if entry.get("params"):
        lines.append("params = { " + ", ".join(f"{k} = {_toml(v)}" for k, v in entry["params"].items()) + " }")
    if entry.get("files"):
        lines.append("files = { " + ", ".join(f"{k} = {_toml(str(base / v))}" for k, v in entry["files"].items()) + " }")
    return "\n".join(lines)


def missing_required(plugin) -> list[str]:
    """Parameters whose default the parameter rejects (required ones) and SMALL does not give."""
    entry = SMALL.get(plugin.id, {})
    given = {**entry.get("params", {}), **entry.get("files", {})}
    missing = []
    for param in plugin.analysis.params:
        if param.name in given:
            continue
        try:
            param.validate(param.default)
        except InputError:
            missing.append(param.name)
    return missing


def runnable_builtins() -> list[str]:
    registry = discover_plugins()
    ids = []
    for pid in builtin_plugin_ids():
        record = registry.record(pid)
        if record is not None and record.ok and record.plugin.analysis is not None and not missing_required(record.plugin):
            ids.append(pid)
    return ids


@pytest.mark.parametrize("plugin_id", builtin_plugin_ids())
def test_builtin_plugin_is_in_the_every_plugin_report(plugin_id):
    """One line per built-in plugin: which ones the big report covers, and why any is left out."""
    plugin = discover_plugins().get(plugin_id)
    if plugin.analysis is None:
        pytest.skip(f"{plugin_id} has no analysis yet (a skeleton); give it small parameters in SMALL when it lands")
    missing = missing_required(plugin)
    if missing:
        pytest.skip(f"{plugin_id} needs {', '.join(missing)}: give them (and any files) in SMALL to put it in the every-plugin report")
    names = {p.name for p in plugin.analysis.params}
    assert set(SMALL.get(plugin_id, {}).get("params", {})) <= names
    assert plugin_id in runnable_builtins()


def count_pdf_pages(data: bytes) -> int:
    """Pages of a PDF from its page objects (and checked against the page tree's /Count)."""
    pages = len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))
    counts = [int(n) for n in re.findall(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)", data) + re.findall(rb"/Count\s+(\d+)[^>]*?/Type\s*/Pages\b", data)]
    if counts:
        assert max(counts) == pages, (counts, pages)
    return pages


EXTERNAL = re.compile(r"(https?:|ftp:|//[a-z0-9.-]+\.[a-z]{2,}/|<link\b|<script\b|@import|url\(\s*['\"]?(?!#|data:))", re.IGNORECASE)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """Every built-in plugin with an analysis, in one report made by the CLI on the lab model."""
    folder = tmp_path_factory.mktemp("report")
    ids = runnable_builtins()
    # A spec's files lie in its folder (paths outside it are refused without --allow-outside-paths).
    shutil.copytree(REPO / "tests" / "data", folder / "data")
    text = "\n\n".join(
        [f'title = "Every plugin <on> the lab model & more"\nprompts = [{_toml(PROMPT)}]\n\n[model]\nspec = "lab:induction"']
        + [analysis_toml(pid, SMALL.get(pid, {}), folder) for pid in ids]
    )
    spec = folder / "every.toml"
    spec.write_text(text + "\n", encoding="utf-8")
    done = run_cli("report", str(spec), "--out", str(folder / "every.html"), "--pdf", str(folder / "every.pdf"), "--store", str(folder / "acts.h5"), timeout=600)
    assert done.returncode == 0, done.stderr
    return {"folder": folder, "ids": ids, "spec": text, "stderr": done.stderr}


@pytest.mark.slow
def test_every_builtin_report_is_complete(full_report):
    folder, ids = full_report["folder"], full_report["ids"]
    assert {"logit-lens", "attention", "induction", "qk-ov"} <= set(ids)
    html = (folder / "every.html").read_text(encoding="utf-8")
    assert not EXTERNAL.search(html), EXTERNAL.search(html).group(0)
    assert "<img src='http" not in html and "src=\"http" not in html
    # Every figure of every section is in the HTML: sections rendered again from the saved results.
    registry = discover_plugins()
    loaded = load_results(folder / "every.h5", registry.result_class)
    assert [info.kind.split("/")[0] for info, _ in loaded] == ids
    sections = [result.report() for _, result in loaded]
    figures = sum(len(s.figures) for s in sections)
    assert figures > 0 and html.count("<figure>") == figures
    assert len(re.findall(r"<figure><div class='title'>[^<]*</div>(<svg\b|<img\b)", html)) == figures
    for section in sections:
        for figure in section.figures:
            assert f"<div class='title'>{_html_escape(figure.title)}</div>" in html
    # Title escaped, model and fingerprint, versions, parameters, how-to-read, and the spec.
    assert "Every plugin &lt;on&gt; the lab model &amp; more" in html
    fingerprint = loaded[0][1].meta.model_fingerprint
    assert "lab:induction" in html and fingerprint in html
    for name in ("torch", "transformer-lens", "interpretability-workbench"):
        assert f"<th>{name}</th>" in html
    assert html.count("<h3>Parameters</h3>") == len(ids)
    assert "<th>self_top_tokens</th><td>16</td>" in html and "<th>batch</th><td>2</td>" in html
    assert html.count("How to read it.") == len(ids)
    assert _html_escape(full_report["spec"]) in html
    assert "wrote" in full_report["stderr"] and "pages" in full_report["stderr"]


def _html_escape(text: str) -> str:
    from html import escape

    return escape(text)


def test_every_builtin_report_pdf_and_data(full_report):
    folder, ids = full_report["folder"], full_report["ids"]
    data = (folder / "every.pdf").read_bytes()
    assert data.startswith(b"%PDF-")
    pages = count_pdf_pages(data)
    assert 6 <= pages <= 20, pages
    assert f"({pages} pages)" in full_report["stderr"]
    # `workbench inspect` lists the results; the workspace description makes it openable in the app.
    listing = run_cli("inspect", str(folder / "every.h5"), "--json")
    assert listing.returncode == 0, listing.stderr
    kinds = [r["kind"].split("/")[0] for r in json.loads(listing.stdout)["results"]]
    assert kinds == ids
    import h5py

    with h5py.File(folder / "every.h5", "r") as handle:
        description = json.loads(handle["workspace/description"][()])
        assert [p["plugin"] for p in description["panels"]] == ids
        assert description["model"]["spec"] == "lab:induction" and description["prompts"] == [PROMPT]
        assert handle["report/spec"][()].decode() == full_report["spec"] + "\n"


def test_pdf_page_count_grows_with_content(full_report, lab_model, tmp_path):
    from workbench.gui.report_pdf import write_pdf

    registry = discover_plugins()
    loaded = [(info.title, r) for info, r in load_results(full_report["folder"] / "every.h5", registry.result_class)]
    small = write_pdf(report_from_results(loaded[:1], "One", registry), tmp_path / "one.pdf")
    big = write_pdf(report_from_results(loaded + loaded, "Twice", registry), tmp_path / "twice.pdf")
    assert small == count_pdf_pages((tmp_path / "one.pdf").read_bytes()) >= 1
    assert big == count_pdf_pages((tmp_path / "twice.pdf").read_bytes())
    every = count_pdf_pages((full_report["folder"] / "every.pdf").read_bytes())
    assert small < every < big


def test_activations_are_reused_from_the_store(lab_model, tmp_path):
    spec = parse_spec(
        f'prompts = ["{PROMPT}"]\n[model]\nspec = "lab:induction"\n[[analysis]]\nplugin = "logit-lens"\n[[analysis]]\nplugin = "logit-lens"\nparams = {{ top_k = 2 }}\n'
    )
    store = tmp_path / "acts.h5"
    first = run_to_completion(build_report(spec, model=lab_model, store_path=store))
    assert [e.result.meta.reused_activations for e in first.entries] == [False, True]
    again = run_to_completion(build_report(spec, model=lab_model, store_path=store))
    assert all(e.result.meta.reused_activations for e in again.entries)


def test_progress_is_reported_and_monotonic(lab_model):
    spec = parse_spec(f'prompts = ["{PROMPT}"]\n[model]\nspec = "lab:induction"\n[[analysis]]\nplugin = "logit-lens"\n[[analysis]]\nplugin = "attention"\n')
    seen = []
    report = run_to_completion(build_report(spec, model=lab_model), on_progress=seen.append)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(seen) > 4
    assert any("Logit lens" in p.message for p in seen) and len(report.entries) == 2


def test_cancelling_a_build_stops_at_a_progress_report(lab_model):
    spec = parse_spec(f'prompts = ["{PROMPT}"]\n[model]\nspec = "lab:induction"\n[[analysis]]\nplugin = "logit-lens"\n[[analysis]]\nplugin = "attention"\n')
    job = build_report(spec, model=lab_model)
    next(job), next(job), next(job)
    job.close()  # what the GUI's Cancel and Ctrl-C at the CLI do
    with pytest.raises(StopIteration):
        next(job)


@pytest.mark.parametrize(
    "spec, problem, fix",
    [
        ('title = "x"\n[model\nspec = "lab:induction"\n', "line 2", "TOML"),
        ('[model]\nspec = "lab:induction"\n[[analysis]]\nplugin = "no-such-plugin"\n', "line 3: no plugin 'no-such-plugin'", "logit-lens"),
        (f'prompts = ["{PROMPT}"]\n[model]\nspec = "lab:induction"\n[[analysis]]\nplugin = "logit-lens"\n\n[[analysis]]\nplugin = "logit-lens"\nparams = {{ topk = 2 }}\n', "line 7 (logit-lens): Unknown parameter 'topk'", "top_k"),
        (f'prompts = ["{PROMPT}"]\n[model]\nspec = "lab:induction"\n[[analysis]]\nplugin = "logit-lens"\nparams = {{ top_k = 0 }}\n', "Parameter 'top_k' cannot be 0", "from 1 to 50"),
        ('[[analysis]]\nplugin = "logit-lens"\n', "no model given", "[model]"),
        ('[model]\nspec = "lab:induction"\n', "no analyses given", "[[analysis]]"),
        ('[model]\nspec = "lab:induction"\n[[analysis]]\nplugin = "logit-lens"\n', "needs a prompt", "prompts"),
        ('[model]\nspec = "lab:induction"\n[[analysis]]\nplugin = "logit-lens"\nfiles = { data = "missing.jsonl" }\n', "missing.jsonl does not exist", "spec's folder"),
        ('[model]\nspec = "lab:induction"\ncolour = 3\n[[analysis]]\nplugin = "logit-lens"\n', "unknown key 'colour'", "spec"),
    ],
)
def test_bad_specs_fail_in_one_line_before_the_model_loads(tmp_path, capsys, spec, problem, fix):
    path = tmp_path / "bad.toml"
    path.write_text(spec, encoding="utf-8")
    assert main(["report", str(path), "--out", str(tmp_path / "r.html"), "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and problem in lines[0] and fix in lines[0], err
    assert "loading" not in err and not (tmp_path / "r.html").exists()


def test_missing_spec_and_wrong_suffix(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "r.html")]) == 2
    assert "Report spec not found" in capsys.readouterr().err
    spec = tmp_path / "s.toml"
    spec.write_text(f'prompts = ["{PROMPT}"]\n[model]\nspec = "lab:induction"\n[[analysis]]\nplugin = "logit-lens"\n')
    assert main(["report", str(spec), "--out", str(tmp_path / "r.pdf")]) == 2
    assert "not an .html file" in capsys.readouterr().err


def test_file_parameters_resolve_against_the_spec_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "facts.jsonl").write_text("{}\n")
    (tmp_path / "prompts.txt").write_text("t1 t2\n\nt3 t4\n")
    spec = parse_spec(
        '[model]\nspec = "lab:induction"\n[prompts]\nfile = "prompts.txt"\n[[analysis]]\nplugin = "logit-lens"\nfiles = { dataset = "data/facts.jsonl" }\n',
        base_dir=tmp_path,
    )
    assert spec.prompts == ["t1 t2", "t3 t4"]
    assert spec.analyses[0].params == {"dataset": str((tmp_path / "data" / "facts.jsonl").resolve())}


def _section_report(prompt: str, caption: str) -> Report:
    section = ReportSection(
        title="Risky",
        how_to_read="Read <this> & that",
        figures=[
            Figure("svg <fig>", svg="<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'><rect width='10' height='10'/></svg>", caption=caption),
            Figure("png fig", png=b"\x89PNG\r\n\x1a\nfake"),
        ],
        tables=[Table("T <1>", ["a<b", "n"], [["</td><script>", 1.5]])],
        notes=["note & <b>"],
    )
    entry = ReportEntry(plugin_id="risky", title="Risky <title>", params={"text": "<b>bold</b>"}, section=section)
    return Report(title="R & D", created="now", model_spec="lab:induction", prompts=[prompt], entries=[entry], spec_text='title = "<x>"\n')


def test_html_escapes_user_text_and_embeds_figures():
    html = render_html(_section_report("a <script>alert(1)</script> & b", "cap </figure>"))
    assert "<script" not in html.lower()
    assert "a &lt;script&gt;alert(1)&lt;/script&gt; &amp; b" in html
    assert "cap &lt;/figure&gt;" in html and "&lt;/td&gt;&lt;script&gt;" in html and "note &amp; &lt;b&gt;" in html
    assert "Risky &lt;title&gt;" in html and "&lt;b&gt;bold&lt;/b&gt;" in html and "title = &quot;&lt;x&gt;&quot;" in html
    assert html.count("<figure>") == 2 and "<svg width='10'" in html and "src='data:image/png;base64," in html
    assert "<?xml" not in html and not EXTERNAL.search(html)
    assert "@media print" in html and "break-inside: avoid" in html


def test_failed_analysis_becomes_an_error_section():
    report = _section_report("p", "c")
    report.entries.append(ReportEntry(plugin_id="broken", title="Broken", error=__import__("workbench.report", fromlist=["AnalysisError"]).AnalysisError("Plugin 'broken' failed: boom", "a bug", "Traceback <x>")))
    html = render_html(report)
    assert "This analysis failed" in html and "Plugin &#x27;broken&#x27; failed: boom" in html and "Traceback &lt;x&gt;" in html
    assert "(1 failed)" in html


def test_spec_of_an_app_report_reproduces_it(full_report):
    registry = discover_plugins()
    loaded = [(info.title, r) for info, r in load_results(full_report["folder"] / "every.h5", registry.result_class)]
    report = report_from_results(loaded, "From the app", registry)
    spec = parse_spec(report.spec_text)
    assert spec.model.spec == "lab:induction" and spec.prompts == [PROMPT] and spec.title == "From the app"
    assert [a.plugin for a in spec.analyses] == full_report["ids"]
    for analysis, (_, result) in zip(spec.analyses, loaded):
        plugin = registry.get(analysis.plugin)
        assert plugin.analysis.resolve(given=analysis.params) == plugin.analysis.resolve(given=result.meta.params)


def test_pagination_never_cuts_a_block_and_keeps_headings_with_what_follows():
    noop = lambda painter, x, y: None  # noqa: E731
    heading = Block(20, noop, keep_with_next=True)
    figure = Block(300, noop)
    header = Block(15, noop, keep_with_next=True)
    rows = [Block(10, noop, gap=0) for _ in range(60)]
    for row in rows:
        row.header = header
    blocks = [Block(600, noop), heading, figure, header, *rows]
    pages = paginate(blocks, page_height=800)
    for page in pages:
        assert all(y + block.height <= 800 for block, y in page.items)
    assert pages[1].items[0][0] is heading and pages[1].items[1][0] is figure  # the heading moved with its figure
    continued = [page for page in pages if any(b.header is header for b, _ in page.items) and page.items[0][0] is header]
    assert continued, "a table continuing on a new page starts with its header"
    placed = [b for page in pages for b, _ in page.items]
    assert all(row in placed for row in rows) and placed.count(figure) == 1


def test_a_figure_may_shrink_a_little_to_finish_a_page_but_never_much():
    noop = lambda painter, x, y: None  # noqa: E731
    near = Block(300, noop, min_scale=0.8)
    far = Block(300, noop, min_scale=0.8)
    pages = paginate([Block(530, noop, gap=0), near], page_height=800)  # 270 of 300 left: 0.9
    assert len(pages) == 1 and near.scale == pytest.approx(0.9) and near.placed_height <= 270
    pages = paginate([Block(600, noop, gap=0), far], page_height=800)  # 200 of 300 left: moves on, whole
    assert len(pages) == 2 and far.scale == 1.0 and pages[1].items[0] == (far, 0.0)


def test_tall_figures_shrink_to_a_page(tmp_path):
    from workbench.gui.report_pdf import Layout, ensure_app

    ensure_app()
    from PySide6.QtGui import QPdfWriter

    writer = QPdfWriter(str(tmp_path / "x.pdf"))
    writer.setResolution(96)
    layout = Layout(writer, 600)
    layout.figure(Figure("tall", svg="<svg xmlns='http://www.w3.org/2000/svg' width='300' height='3000'><rect width='300' height='3000'/></svg>", caption="c"), page_height=900)
    layout.figure(Figure("wide", svg="<svg xmlns='http://www.w3.org/2000/svg' width='1200' height='100'><rect width='1200' height='100'/></svg>"), page_height=900)
    tall, wide = layout.blocks
    assert 850 < tall.height <= 900 and wide.height < 100


@pytest.mark.slow
def test_third_party_plugins_appear_and_a_failing_one_costs_only_its_section(tmp_path):
    """A `workbench new-plugin` package and a plugin that raises, found on WORKBENCH_PLUGIN_PATH."""
    plugins = tmp_path / "plugins"
    assert main(["new-plugin", "resid-norms", "--dir", str(plugins)]) == 0
    (plugins / "wbplugin_broken.py").write_text(
        textwrap.dedent(
            '''
            from workbench.plugin_api import Analysis, Plugin, Progress

            def run(ctx):
                yield Progress(0, 1, "about to fail")
                raise RuntimeError("boom <b>")

            plugin = Plugin(id="broken", name="Broken", analysis=Analysis(run=run))
            '''
        )
    )
    spec = tmp_path / "third.toml"
    spec.write_text(
        f'prompts = ["{PROMPT}"]\n[model]\nspec = "lab:induction"\n'
        '[[analysis]]\nplugin = "resid-norms"\nparams = { norm = "max" }\n'
        '[[analysis]]\nplugin = "broken"\n'
        '[[analysis]]\nplugin = "logit-lens"\n'
    )
    done = run_cli("report", str(spec), "--out", str(tmp_path / "third.html"), "--quiet", env={"WORKBENCH_PLUGIN_PATH": str(plugins)})
    assert done.returncode == 1, done.stderr
    assert "error: Broken (broken) failed: Plugin 'broken' failed: RuntimeError: boom <b>" in done.stderr
    assert "Traceback" not in done.stderr
    html = (tmp_path / "third.html").read_text(encoding="utf-8")
    assert "plugin <b>resid-norms</b>" in html and "<th>norm</th><td>max</td>" in html
    assert "Each cell is the size of the residual stream" in html or "How to read it." in html
    assert html.count("<figure>") >= 2 and "This analysis failed" in html and "boom &lt;b&gt;" in html
    assert "plugin <b>logit-lens</b>" in html
    listing = run_cli("inspect", str(tmp_path / "third.h5"), "--json", env={"WORKBENCH_PLUGIN_PATH": str(plugins)})
    assert [r["kind"] for r in json.loads(listing.stdout)["results"]] == ["resid-norms/residual-norms", "logit-lens/lens"]


def test_html_and_data_need_no_qt(full_report, tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        from workbench.plugin_api import discover_plugins
        from workbench.results import load_results
        from workbench.report import report_from_results, write_report
        registry = discover_plugins()
        loaded = [(i.title, r) for i, r in load_results({str(full_report['folder'] / 'every.h5')!r}, registry.result_class)]
        write_report(report_from_results(loaded, "t", registry), {str(tmp_path / 'r.html')!r})
        print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "qtpy"))))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "" and (tmp_path / "r.h5").exists()


def test_parse_errors_are_input_errors():
    with pytest.raises(InputError) as caught:
        parse_spec("title = 3\n[model]\nspec = 'x'\n[[analysis]]\nplugin='a'\n")
    assert "title must be text" in caught.value.message


def test_data_file_may_not_replace_the_activation_store(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(f'prompts = ["{PROMPT}"]\n[model]\nspec = "lab:induction"\n[[analysis]]\nplugin = "logit-lens"\n')
    assert main(["report", str(spec), "--out", str(tmp_path / "r.html"), "--store", str(tmp_path / "r.h5")]) == 2
    assert "would replace the activation store" in capsys.readouterr().err


def test_a_required_parameter_left_out_fails_before_the_model_loads(tmp_path, monkeypatch, capsys):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "wbplugin_needs_subject.py").write_text(
        "from workbench.plugin_api import Analysis, Plugin, Text\n"
        "def run(ctx, subject=''):\n    yield\n"
        "plugin = Plugin(id='needs-subject', name='Needs subject', analysis=Analysis(run=run, needs_prompt=False, params=[Text('subject', default='', allow_empty=False)]))\n"
    )
    monkeypatch.setenv("WORKBENCH_PLUGIN_PATH", str(plugins))
    spec = tmp_path / "s.toml"
    spec.write_text('[model]\nspec = "lab:induction"\n\n[[analysis]]\nplugin = "needs-subject"\n')
    assert main(["report", str(spec), "--out", str(tmp_path / "r.html"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "s.toml line 4 (needs-subject): parameter 'subject' needs a value. (add it to params: subject accepts non-empty text)" in err
    assert "loading" not in err


def test_the_example_spec_is_valid_and_covers_every_builtin_plugin():
    spec = load_spec(REPO / "examples" / "report.toml")
    check_spec(spec, discover_plugins())  # raises, naming the entry, on a bad parameter or missing file
    assert {a.plugin for a in spec.analyses} == set(builtin_plugin_ids())
    # ROME leaves the model edited, so it must come after every analysis that reads the model.
    assert spec.analyses[-1].plugin == "rome"


def test_a_spec_places_the_model_with_a_device_map(tmp_path):
    from workbench.errors import WorkbenchError
    from workbench.report.spec import parse_spec

    text = '[model]\nspec = "lab:induction"\ndevice_map = "auto"\nmax_memory = {cpu = "600KB"}\n[[analysis]]\nplugin = "logit-lens"\n[prompts]\ntext = ["t1 t2"]\n'
    spec = parse_spec(text, tmp_path)
    assert spec.model.device_map == "auto" and spec.model.max_memory == "cpu=600KB"
    with pytest.raises(WorkbenchError, match="Unknown device map"):
        parse_spec(text.replace('"auto"', '"everywhere"'), tmp_path)
    with pytest.raises(WorkbenchError, match="Cannot read the size"):
        parse_spec(text.replace('"600KB"', '"lots"'), tmp_path)
