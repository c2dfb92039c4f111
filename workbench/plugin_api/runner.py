"""Running a plugin's analysis and its queries: the one path used by the CLI, the GUI and reports.

Parameters are validated before any work starts; the plugin's generator is driven
with its progress passed through; whatever it raises that is not a user error
becomes a PluginError naming the plugin, with the traceback kept for details.
A query (a drill-down on a result) runs the same way, after one check that the
loaded model is the one the result came from; its result carries the original
provenance with the query's parameters merged in.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable
from typing import Any

from ..errors import EngineError, InputError, WorkbenchError
from ..models import LoadedModel
from ..progress import Job, Progress
from ..results.base import Result, ResultMeta
from .context import AnalysisContext
from .cost import LONG_JOB_SECONDS, Estimate, LongJobError, estimate
from .plugin import Analysis, Plugin, PluginError, Query


class PluginRunError(PluginError):
    """A plugin raised an unexpected exception while running."""

    def __init__(self, plugin_id: str, exc: BaseException, details: str):
        super().__init__(f"Plugin {plugin_id!r} failed: {type(exc).__name__}: {exc}", "this is a bug in the plugin; the details hold its traceback")
        self.plugin_id = plugin_id
        self.details = details


def _versions() -> dict[str, str]:
    from ..capture import package_version

    return {name: package_version(name) for name in ("interpretability-workbench", "transformer-lens", "nnsight", "torch", "transformers", "h5py")}


def run_analysis(
    plugin: Plugin, ctx: AnalysisContext, params: dict[str, Any] | None = None, texts: dict[str, str] | None = None, *, go_on: bool = False
) -> Job[Result]:
    """Generator: validates parameters, runs the analysis yielding Progress, returns its Result.
    A job whose cost estimate is over LONG_JOB_SECONDS raises LongJobError unless go_on."""
    analysis, values = _checked_values(plugin, ctx, params, texts)
    if not go_on:
        found = yield from _estimate(analysis, ctx, values)
        if found is not None and found.seconds is not None and found.seconds > LONG_JOB_SECONDS:
            raise LongJobError(plugin.name, found)
    started = time.perf_counter()
    # The model the analysis was asked about: an edit (ROME) changes the fingerprint as it runs.
    fingerprint = ctx.model.fingerprint
    result = yield from _drive(plugin, analysis.run_function, (ctx,), values)
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
        device=str(model.device),
        dtype=str(model.dtype),
    )
    yield Progress(1, 1, "done")
    return result


def _checked_values(plugin: Plugin, ctx: AnalysisContext, params: dict[str, Any] | None, texts: dict[str, str] | None) -> tuple[Analysis, dict[str, Any]]:
    """The plugin's analysis and its parameter values, once its inputs, the model's engine
    and its placement are checked."""
    if plugin.analysis is None:
        raise PluginError(f"Plugin {plugin.id!r} has no analysis to run.", "choose a plugin with an analysis ('workbench plugins')")
    analysis = plugin.analysis
    check_engine(plugin, ctx.model)
    values = analysis.resolve(params, texts)
    if analysis.needs_prompt and not ctx.prompts:
        raise WorkbenchError(f"{plugin.name} needs a prompt.", "type a prompt (CLI: --prompt TEXT)")
    if analysis.needs_prompt:
        for index in range(len(ctx.prompts) if analysis.multi_prompt else 1):
            ctx.tokens(index)  # empty or over-long prompts fail here, before any work
    check_weights_in_place(plugin, ctx.model)
    return analysis, values


def check_weights_in_place(plugin: Plugin, model: LoadedModel) -> None:
    """WorkbenchError when the plugin reads weight matrices a device map offloaded."""
    if plugin.analysis is None or not plugin.analysis.weights_in_place_on(model.engine.name):
        return
    offloaded = model.offloaded_weights
    if offloaded:
        raise WorkbenchError(
            f"{plugin.name} reads {model.name}'s weight matrices themselves, but its device map keeps {len(offloaded)} of them "
            f"on CPU or disk ({model.device_map_summary}), where they are empty until a forward pass copies them in.",
            "load the model on one device, or give the device map room for every layer on the devices that compute (--max-memory)",
        )


def estimate_cost(plugin: Plugin, ctx: AnalysisContext, params: dict[str, Any] | None = None, texts: dict[str, str] | None = None) -> Job[Estimate | None]:
    """Generator: the analysis' cost estimate with its time here (None: it states no cost)."""
    analysis, values = _checked_values(plugin, ctx, params, texts)
    return (yield from _estimate(analysis, ctx, values, measure=True))


def _estimate(analysis: Analysis, ctx: AnalysisContext, values: dict[str, Any], measure: bool = False) -> Job[Estimate | None]:
    function = analysis.cost_function()
    if function is None:
        return None
    cost = function(ctx, **values)
    yield Progress(0, 0, "estimating the cost")
    return estimate(ctx.model, cost, measure)


def _drive(plugin: Plugin, function_of: Callable[[], Callable[..., Any]], args: tuple[Any, ...], values: dict[str, Any]) -> Job[Result]:
    """Call a plugin's run function (a generator or a plain function) and check it returns a Result."""
    try:
        function = function_of()
        job = function(*args, **values)
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
    return result


def check_engine(plugin: Plugin, model: LoadedModel | None) -> None:
    """EngineError unless the plugin's analysis declares the engine that runs the model
    (`Analysis.engines`, plugin API 1.2), before any work."""
    if plugin.analysis is None or model is None:
        return
    engine = model.engine.name
    if model.engine.remote and plugin.analysis.weights_in_place_on(engine):
        raise EngineError(
            f"{plugin.name} reads {model.name}'s weight matrices themselves, and on NDIF they stay on the server; only runs of the model are sent there.",
            "run it on a model that fits here (its Hub id without the 'ndif:' prefix, or a smaller model of the family)",
        )
    if engine not in plugin.analysis.engines:
        raise EngineError(
            f"{plugin.name} does not run on the {engine} engine yet.",
            f"load the model without the '{model.source.engine}:' prefix ({model.source.base_spec}) to run it on TransformerBridge"
            if "bridge" in plugin.analysis.engines
            else f"it runs on: {', '.join(plugin.analysis.engines)}",
        )


def check_same_model(result: Result, model: LoadedModel | None) -> None:
    """InputError unless `model` is the model `result` was computed on (by fingerprint).

    The one check every drill-down goes through: a head of another model's weights,
    drawn under this result's title, would be a wrong figure."""
    meta = result.meta
    if model is None:
        name = (meta.model_name or meta.model_spec) if meta is not None else "the model it came from"
        raise InputError("No model is loaded.", f"load {name} to look further into this result")
    if meta is not None and meta.model_fingerprint and meta.model_fingerprint != model.fingerprint:
        raise InputError(
            f"This result is from {meta.model_name or meta.model_spec} (fingerprint {meta.model_fingerprint[:12]}); "
            f"the loaded model is {model.name} (fingerprint {model.fingerprint[:12]}).",
            "load the result's model, or Run again to recompute on this one",
        )


def run_query(plugin: Plugin, name: str, ctx: AnalysisContext, result: Result, params: dict[str, Any] | None = None, texts: dict[str, str] | None = None) -> Job[Result]:
    """Generator: a plugin's query on one of its results, through the same checks as an analysis.

    Parameters are validated and the model checked before any work; progress and cancel
    work as for any job; the returned result's provenance is the original's, with the
    query's name, parameters, time and store reuse."""
    query: Query = plugin.query(name)
    values = query.resolve(params, texts)
    check_same_model(result, ctx.model)
    check_weights_in_place(plugin, ctx.model)
    check_engine(plugin, ctx.model)
    started = time.perf_counter()
    answer = yield from _drive(plugin, query.run_function, (ctx, result), values)
    base = result.meta or ResultMeta(plugin_id=plugin.id, plugin_version=plugin.version)
    # The query's own account of its parameters when it gives one (it knows which of its
    # values mean "as the result"), else the result's parameters with the query's on top.
    own = answer.meta.params if answer.meta is not None and answer.meta is not base else None
    merged = dict(own) if own is not None else {**base.params, **{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}}
    answer.meta = dataclasses.replace(
        base,
        params=merged,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seconds=round(time.perf_counter() - started, 3),
        reused_activations=ctx.reused_activations,
        query=name,
    )
    return answer


def summary_json(result: Result) -> dict[str, Any]:
    """The JSON written by `workbench run --json`: provenance, then the result's own numbers."""
    meta = result.meta or ResultMeta(plugin_id="")
    out: dict[str, Any] = {
        "plugin": meta.plugin_id,
        "model": meta.model_spec,
        "model_name": meta.model_name,
        "model_fingerprint": meta.model_fingerprint,
        "prompts": meta.prompts,
        "params": meta.params,
        "seconds_total": meta.seconds,
        "reused_activations": meta.reused_activations,
    }
    if meta.query:
        out["query"] = meta.query
    out.update(result.to_json_dict())
    return out
