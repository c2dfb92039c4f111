"""Running a plugin's analysis: the one path used by the CLI, the GUI and reports.

Parameters are validated before any work starts; the plugin's generator is driven
with its progress passed through; whatever it raises that is not a user error
becomes a PluginError naming the plugin, with the traceback kept for details.
"""

from __future__ import annotations

import time
import traceback

from ..errors import WorkbenchError
from ..progress import Job, Progress
from ..results.base import Result, ResultMeta
from .context import AnalysisContext
from .plugin import Plugin, PluginError


class PluginRunError(PluginError):
    """A plugin raised an unexpected exception while running."""

    def __init__(self, plugin_id: str, exc: BaseException, details: str):
        super().__init__(f"Plugin {plugin_id!r} failed: {type(exc).__name__}: {exc}", "this is a bug in the plugin; the details hold its traceback")
        self.plugin_id = plugin_id
        self.details = details


def _versions() -> dict:
    from ..capture import package_version

    return {name: package_version(name) for name in ("interpretability-workbench", "transformer-lens", "torch", "transformers", "h5py")}


def run_analysis(plugin: Plugin, ctx: AnalysisContext, params: dict | None = None, texts: dict | None = None) -> Job[Result]:
    """Generator: validates parameters, runs the analysis yielding Progress, returns its Result."""
    if plugin.analysis is None:
        raise PluginError(f"Plugin {plugin.id!r} has no analysis to run.", "choose a plugin with an analysis ('workbench plugins')")
    analysis = plugin.analysis
    values = analysis.resolve(params, texts)
    if analysis.needs_prompt and not ctx.prompts:
        raise WorkbenchError(f"{plugin.name} needs a prompt.", "type a prompt (CLI: --prompt TEXT)")
    if analysis.needs_prompt:
        for index in range(len(ctx.prompts) if analysis.multi_prompt else 1):
            ctx.tokens(index)  # empty or over-long prompts fail here, before any work
    started = time.perf_counter()
    # The model the analysis was asked about: an edit (ROME) changes the fingerprint as it runs.
    fingerprint = ctx.model.fingerprint
    try:
        function = analysis.run_function()
        job = function(ctx, **values)
        if not hasattr(job, "send"):  # a plain function: treat its return value as the result
            result = job
        else:
            result = yield from job
    except (WorkbenchError, GeneratorExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise PluginRunError(plugin.id, exc, traceback.format_exc()) from exc
    if not isinstance(result, Result):
        raise PluginRunError(plugin.id, TypeError(f"returned {type(result).__name__}, not a Result"), "")
    model = ctx.model
    result.meta = ResultMeta(
        plugin_id=plugin.id,
        plugin_version=plugin.version,
        params={k: list(v) if isinstance(v, tuple) else v for k, v in values.items()},
        model_spec=model.spec,
        model_name=model.name,
        model_fingerprint=fingerprint,
        prompts=list(ctx.prompts),
        prepend_bos=ctx.prepend_bos,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seconds=round(time.perf_counter() - started, 3),
        reused_activations=ctx.reused_activations,
        versions=_versions(),
    )
    yield Progress(1, 1, "done")
    return result


def summary_json(result: Result) -> dict:
    """The JSON written by `workbench run --json`: provenance, then the result's own numbers."""
    meta = result.meta or ResultMeta(plugin_id="")
    out = {
        "plugin": meta.plugin_id,
        "model": meta.model_spec,
        "model_name": meta.model_name,
        "model_fingerprint": meta.model_fingerprint,
        "prompts": meta.prompts,
        "params": meta.params,
        "seconds_total": meta.seconds,
        "reused_activations": meta.reused_activations,
    }
    out.update(result.to_json_dict())
    return out
