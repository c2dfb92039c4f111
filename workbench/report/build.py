"""Turning analyses into a Report: by running a spec, or from results that already exist (the app).

A Report holds, per analysis, either its result with the section the result rendered
or the error that stopped it, so one failing plugin costs its own section and not the
others. Only the plugin API is used (analysis params, run_analysis, result.report(),
result.summary(), result.meta), so a third-party plugin is reported like a built-in.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import WorkbenchError
from ..plugin_api import AnalysisContext, LongJobError, Plugin, PluginRegistry, PluginRunError, discover_plugins, run_analysis
from ..progress import Job, Progress, sub_job
from ..results.base import ReportSection, Result
from .spec import AnalysisSpec, ModelChoice, ReportSpec, check_spec, spec_text


@dataclass
class AnalysisError:
    message: str
    hint: str = ""
    details: str = ""  # a traceback when the plugin itself broke


@dataclass
class ReportEntry:
    """One analysis of the report: its result and section, or why there is none."""

    plugin_id: str
    title: str
    params: dict[str, Any] = field(default_factory=dict)
    plugin_version: str = ""
    how_to_read: str = ""  # the plugin's report_help, used when the section has none
    result: Result | None = None
    section: ReportSection | None = None
    error: AnalysisError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.section is not None


@dataclass
class Report:
    title: str
    created: str
    model_spec: str = ""
    model_name: str = ""
    model_fingerprint: str = ""
    model_device: str = "cpu"
    model_dtype: str = "float32"
    bos: str = "auto"  # auto, on or off, as in specs
    prompts: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    entries: list[ReportEntry] = field(default_factory=list)
    spec_text: str = ""  # the TOML that reproduces it ("" when made in the app)
    seconds: float = 0.0

    @property
    def failed(self) -> list[ReportEntry]:
        return [e for e in self.entries if e.error is not None]


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def library_versions() -> dict[str, str]:
    from ..capture import package_version

    names = ("interpretability-workbench", "transformer-lens", "torch", "transformers", "numpy", "h5py")
    return {name: package_version(name) for name in names}


def _section_for(entry: ReportEntry, result: Result) -> None:
    """Fill entry from result; a result whose report() raises becomes an error entry, not a lost report."""
    entry.result = result
    try:
        section = result.report()
        if not isinstance(section, ReportSection):
            raise TypeError(f"report() returned {type(section).__name__}, not a ReportSection")
        entry.section = section
    except Exception as exc:  # a plugin's report code may raise anything
        entry.error = AnalysisError(f"{entry.title}: its report section failed: {type(exc).__name__}: {exc}", "this is a bug in the plugin", traceback.format_exc())


def entry_from_result(result: Result, plugin: Plugin | None = None, title: str = "") -> ReportEntry:
    meta = result.meta
    plugin_id = meta.plugin_id if meta else (plugin.id if plugin else result.kind.split("/")[0])
    entry = ReportEntry(
        plugin_id=plugin_id,
        title=title or (plugin.name if plugin else plugin_id),
        params=dict(meta.params) if meta else {},
        plugin_version=meta.plugin_version if meta else (plugin.version if plugin else ""),
        how_to_read=plugin.report_help if plugin else "",
    )
    _section_for(entry, result)
    return entry


def report_from_results(results: list[tuple[str, Result]], title: str, registry: PluginRegistry | None = None) -> Report:
    """A Report of results that exist already (the app's panels): nothing is run.

    results: (title, result) pairs; the model and prompts come from the first result's provenance.
    """
    registry = registry if registry is not None else discover_plugins()
    report = Report(title=title or "Analysis report", created=_now(), versions=library_versions())
    bos = "auto"
    for entry_title, result in results:
        meta = result.meta
        record = registry.record(meta.plugin_id) if meta else None
        plugin = record.plugin if record is not None and record.ok else None
        report.entries.append(entry_from_result(result, plugin, entry_title))
        if meta is not None and not report.model_spec:
            report.model_spec, report.model_name, report.model_fingerprint = meta.model_spec, meta.model_name, meta.model_fingerprint
            report.prompts = list(meta.prompts)
            bos = "auto" if meta.prepend_bos is None else ("on" if meta.prepend_bos else "off")
    analyses = []
    for entry, (_, result) in zip(report.entries, results):
        record = registry.record(entry.plugin_id)
        default_title = record.name if record is not None else entry.plugin_id
        title = entry.title if entry.title != default_title else ""
        analyses.append(AnalysisSpec(plugin=entry.plugin_id, title=title, params=entry.params, prompts=list(result.meta.prompts) if result.meta else None))
    report.bos = bos
    report.spec_text = spec_text(report.title, ModelChoice(report.model_spec or "MODEL", bos=bos), report.prompts, analyses)
    return report


def build_report(
    spec: ReportSpec,
    registry: PluginRegistry | None = None,
    model=None,
    store_path: Path | None = None,
    go_on: bool = False,
) -> Job[Report]:
    """Generator: checks the spec, loads the model (unless given), runs every analysis, returns the Report.

    Activations go through an activation store, so analyses reading the same hooks
    compute them once: store_path (or the spec's store) is read and filled and kept;
    without one a temporary store serves this build only. An analysis estimated over
    LONG_JOB_SECONDS is left out with its estimate as its error, unless go_on.
    """
    started = time.perf_counter()
    registry = registry if registry is not None else discover_plugins()
    resolved = check_spec(spec, registry)  # before the model loads: typos fail fast
    total = float(len(spec.analyses) + 1)
    if model is None:
        from ..models import load_model

        yield Progress(0, total, f"loading {spec.model.spec}")
        model = load_model(spec.model.spec, device=spec.model.device, dtype=spec.model.dtype, device_map=spec.model.device_map, max_memory=spec.model.max_memory)
    yield Progress(1, total, f"loaded {model.name}")

    store = store_path or spec.store
    scratch = None
    if store is None:
        scratch = Path(tempfile.mkdtemp(prefix="workbench-report-"))
        store = scratch / "activations.h5"
    report = Report(
        title=spec.title,
        created=_now(),
        model_spec=model.spec,
        model_name=model.name,
        model_fingerprint=model.fingerprint,
        model_device=spec.model.device,
        model_dtype=spec.model.dtype,
        bos=spec.model.bos,
        prompts=list(spec.prompts),
        versions=library_versions(),
        spec_text=spec.text,
    )
    try:
        for index, (analysis, params) in enumerate(zip(spec.analyses, resolved)):
            plugin = registry.get(analysis.plugin)
            entry = ReportEntry(
                plugin_id=plugin.id,
                title=analysis.title or plugin.name,
                params={k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
                plugin_version=plugin.version,
                how_to_read=plugin.report_help,
            )
            report.entries.append(entry)
            ctx = AnalysisContext(
                model=model,
                prompts=list(analysis.prompts if analysis.prompts is not None else spec.prompts),
                prepend_bos=spec.model.prepend_bos,
                store_path=Path(store),
                fill_store=True,
            )
            try:
                result = yield from sub_job(run_analysis(plugin, ctx, params, go_on=go_on), 1 + index, 1.0, total, entry.title)
            except (PluginRunError, LongJobError) as exc:
                entry.error = AnalysisError(exc.message, exc.hint or "", getattr(exc, "details", ""))
                continue
            except WorkbenchError as exc:
                entry.error = AnalysisError(exc.message, exc.hint or "")
                continue
            _section_for(entry, result)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    report.seconds = round(time.perf_counter() - started, 2)
    yield Progress(total, total, "report built")
    return report
