"""`workbench new-plugin NAME --dir PATH`: a working plugin package to start from.

The package has every contribution a plugin can make (an analysis with typed
parameters, a follow-up query, a result type with a report section, a panel) and
tests that pass, so an author starts from green and changes one piece at a time.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from ..errors import InputError
from .plugin import _ID, API_VERSION_TEXT

_INIT = '''"""$title: a workbench plugin (made with `workbench new-plugin`).

The app finds it when its parent folder is on WORKBENCH_PLUGIN_PATH, or through a
`workbench.plugins` entry point once it is packaged. This module stays cheap to
import: the analysis, result and panel are named as "module:attribute" strings
and imported on first use.
"""

from workbench.plugin_api import Analysis, Choice, Int, Plugin, Query

plugin = Plugin(
    id="$plugin_id",
    name="$title",
    version="0.1.0",
    api_version="$api_version",
    description="The norm of the residual stream at every layer and position.",
    analysis=Analysis(
        run="$package.analysis:run",
        params=[
            Choice("norm", default="l2", choices=("l2", "max"), help="which vector norm to take"),
        ],
    ),
    # A query is a follow-up on a result (a drill-down); panels, reports and
    # `workbench run --query` call it, and it runs headless through the same runner.
    queries=[
        Query(
            "layer",
            run="$package.queries:layer",
            description="the dimensions that carry one layer's residual stream at every position",
            params=[Int("layer", default=0, minimum=0, help="row of the result (0: the first hook)"), Int("top_k", default=3, minimum=1, maximum=32)],
        )
    ],
    # Another plugin's public functions, when you use them: requires=["causal-trace"],
    # then ctx.provided("causal-trace", "causal_trace"). Plugins never import each other.
    result_types=["$package.result:ResidualNormResult"],
    panel="$package.panel:ResidualNormPanel",
    report_help="Each cell is the size of the residual stream after a layer at a token.",
)
'''

_ANALYSIS = '''"""The analysis: a generator that yields progress and returns a result."""

import numpy as np

from workbench.plugin_api import AnalysisContext, Progress

from .result import ResidualNormResult


def run(ctx: AnalysisContext, norm: str = "l2"):
    hooks = ctx.hook_names("residual")
    rows = []
    # The context hands out activations one hook at a time: from the activation store
    # when it holds them (nothing recomputed), else from one forward pass.
    for step, (name, acts) in enumerate(ctx.activations_by_layer(hooks)):  # acts: [position, d_model]
        rows.append(np.linalg.norm(acts, axis=-1) if norm == "l2" else np.abs(acts).max(axis=-1))
        yield Progress(step + 1, len(hooks), f"norms of {name}")
    values = np.stack(rows)
    return ResidualNormResult(
        hooks=hooks,
        str_tokens=ctx.str_tokens(),
        norms=values.astype(np.float32),
        norm=norm,
    )
'''

_RESULT = '''"""The result type: saved to HDF5 by the base class, rendered into reports here."""

from dataclasses import dataclass, field

import numpy as np

from workbench.figures import heatmap
from workbench.plugin_api import Figure, ReportSection, Result, Table


@dataclass
class ResidualNormResult(Result):
    kind = "$plugin_id/residual-norms"

    hooks: list
    str_tokens: list
    norms: np.ndarray  # [hook, position]
    norm: str = "l2"
    # Filled by the `layer` query: the largest dimensions of one row, at every position.
    detail_layer: int = -1
    top_dims: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))  # [position, k]
    top_values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))

    @property
    def layer_labels(self) -> list:
        """Short row labels: "blocks.0.hook_resid_pre" -> "L0.in", "blocks.3.hook_resid_post" -> "L3.out"."""
        return ["L" + h.replace("blocks.", "").replace(".hook_resid_pre", ".in").replace(".hook_resid_post", ".out") for h in self.hooks]

    def summary(self) -> dict:
        return {
            "tokens": self.str_tokens,
            "norm": self.norm,
            "largest": float(self.norms.max()),
            "by_layer_last_token": [round(float(v), 5) for v in self.norms[:, -1]],
        }

    def report(self) -> ReportSection:
        figure = heatmap(self.norms, x_labels=self.str_tokens, y_labels=self.layer_labels, title="Residual stream norm", x_title="token", y_title="layer")
        rows = [[hook, float(self.norms[i, -1])] for i, hook in enumerate(self.hooks)]
        return ReportSection(
            title="$title",
            how_to_read="Brighter cells are larger residual vectors; a bright first column is the usual attention-sink token.",
            figures=[Figure("Residual stream norm", svg=figure)],
            tables=[Table("Last token", ["hook", self.norm + " norm"], rows)],
        )
'''

_QUERIES = '''"""The plugin's follow-up query: run(ctx, result, **params) -> a Result, headless."""

import dataclasses

import numpy as np

from workbench.errors import InputError
from workbench.plugin_api import AnalysisContext, Progress

from .result import ResidualNormResult


def layer(ctx: AnalysisContext, result: ResidualNormResult, layer: int = 0, top_k: int = 3):
    if not 0 <= layer < len(result.hooks):
        raise InputError(f"The result has rows 0..{len(result.hooks) - 1}; there is no row {layer}.", "click a row of the heatmap")
    yield Progress(0, 1, f"reading {result.hooks[layer]}")
    acts = ctx.activations([result.hooks[layer]])[result.hooks[layer]]  # the store's copy when it has one
    dims = np.argsort(-np.abs(acts), axis=-1)[:, :top_k]
    return dataclasses.replace(result, detail_layer=layer, top_dims=dims, top_values=np.take_along_axis(acts, dims, axis=-1))
'''

_PANEL = '''"""The panel: the base class builds the parameter form, Run button, task and exports;
this one shows the result as an interactive heatmap. Panels only draw: a click asks the
plugin's query, which runs in the background, and its answer comes back to render()."""

from workbench.gui.panels import AnalysisPanel
from workbench.gui.widgets.heatmap import HeatmapView


class ResidualNormPanel(AnalysisPanel):
    def build_view(self):
        self.heatmap = HeatmapView()
        self.heatmap.cell_clicked.connect(lambda row, col: self.run_query("layer", {"layer": row}))
        return self.heatmap

    def render(self, result):
        self.heatmap.set_data(result.norms, x_labels=result.str_tokens, y_labels=result.layer_labels)
        if result.detail_layer >= 0:
            self.heatmap.select_cell(result.detail_layer, None)
            dims = ", ".join(str(d) for d in result.top_dims[-1])
            self._set_status(f"{result.layer_labels[result.detail_layer]}: at the last token the largest dimensions are {dims}")
'''

_TEST = '''"""Tests of the $plugin_id plugin, on the workbench's tiny lab model."""

from pathlib import Path

import numpy as np
import torch

from workbench.models import load_model
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis, run_query
from workbench.progress import run_to_completion
from workbench.results import load_results, save_result

HERE = Path(__file__).resolve().parent.parent.parent  # the folder on WORKBENCH_PLUGIN_PATH
PROMPT = "t1 t2 t3 t1 t2"


def test_discovered_and_matches_a_direct_computation(tmp_path):
    registry = discover_plugins(extra_folders=[HERE])
    plugin = registry.get("$plugin_id")
    model = load_model("lab:induction")
    result = run_to_completion(run_analysis(plugin, AnalysisContext(model, [PROMPT])))
    ids = torch.tensor([model.tokenize(PROMPT)])
    _, cache = model.bridge.run_with_cache(ids, names_filter=result.hooks)
    expected = np.stack([cache[name][0].norm(dim=-1).numpy() for name in result.hooks])
    np.testing.assert_allclose(result.norms, expected, rtol=1e-5)

    path = tmp_path / "result.h5"
    save_result(path, result)
    [(info, loaded)] = load_results(path, registry.result_class)
    np.testing.assert_array_equal(loaded.norms, result.norms)
    assert loaded.meta.model_fingerprint == model.fingerprint
    assert result.report().figures


def test_the_layer_query_finds_the_largest_dimensions():
    registry = discover_plugins(extra_folders=[HERE])
    plugin = registry.get("$plugin_id")
    model = load_model("lab:induction")
    ctx = AnalysisContext(model, [PROMPT])
    result = run_to_completion(run_analysis(plugin, ctx))
    detail = run_to_completion(run_query(plugin, "layer", ctx, result, {"layer": 1, "top_k": 2}))
    _, cache = model.bridge.run_with_cache(torch.tensor([model.tokenize(PROMPT)]), names_filter=[result.hooks[1]])
    acts = cache[result.hooks[1]][0]
    assert detail.detail_layer == 1 and detail.meta.query == "layer"
    assert detail.top_dims[-1].tolist() == acts[-1].abs().topk(2).indices.tolist()
'''

_README = '''# $title

A workbench plugin made with `workbench new-plugin $plugin_id`.

    WORKBENCH_PLUGIN_PATH=$folder workbench plugins          # listed as ok
    WORKBENCH_PLUGIN_PATH=$folder workbench run $plugin_id --model lab:induction --prompt "t1 t2 t3 t1 t2"
    WORKBENCH_PLUGIN_PATH=$folder workbench run $plugin_id --model lab:induction --prompt "t1 t2 t3 t1 t2" --query layer --query-param layer=1
    WORKBENCH_PLUGIN_PATH=$folder workbench plugins --validate
    WORKBENCH_PLUGIN_PATH=$folder workbench                  # Panels menu: $title
    python -m pytest $folder/$package/tests

See the workbench's docs/plugins.md for the API.
'''

def write_plugin_template(name: str, folder: Path) -> Path:
    """Write plugin `name` as a package in folder; returns the package folder."""
    if not _ID.match(name):
        raise InputError(f"Plugin name {name!r} is not valid.", "use lower-case letters, digits and dashes, starting with a letter")
    builtin = _builtin_ids()
    if name in builtin:
        raise InputError(f"Plugin name {name!r} is a built-in plugin's id; a plugin with it would be refused as a duplicate.", "choose another name")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--dir {folder} is a file, not a folder.", "give a folder (it is created when missing)")
    package = "wbplugin_" + name.replace("-", "_")
    target = folder / package
    if target.exists():
        raise InputError(f"{target} already exists.", "choose another name or folder; nothing was overwritten")
    values = {
        "plugin_id": name,
        "title": name.replace("-", " ").capitalize(),
        "package": package,
        "api_version": API_VERSION_TEXT,
        "folder": str(Path(folder).resolve()),
    }
    files = {
        "__init__.py": _INIT,
        "analysis.py": _ANALYSIS,
        "result.py": _RESULT,
        "queries.py": _QUERIES,
        "panel.py": _PANEL,
        "README.md": _README,
        "tests/test_plugin.py": _TEST,
    }
    try:
        for relative, text in files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(text).substitute(values), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"The plugin cannot be written in {folder} ({exc.strerror}).", "give a folder you can write to") from None
    return target


def _builtin_ids() -> set[str]:
    """The ids registered by installed packages' entry points (the built-ins among them)."""
    from importlib.metadata import entry_points

    from .discovery import ENTRY_POINT_GROUP

    return {entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)}
