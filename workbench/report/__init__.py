"""Analysis reports: a spec (TOML) or existing results → one HTML file, its data (.h5), optionally a PDF.

    from workbench.report import load_spec, build_report, write_report
    report = run_to_completion(build_report(load_spec("report.toml")))
    write_report(report, "report.html")
    write_pdf(report, "report.pdf")             # from workbench.gui.report_pdf (Qt)

This package is Qt-free (an import contract checks it); the PDF renderer lives in the
GUI layer (workbench.gui.report_pdf), called by the CLI and the app when a PDF is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .build import AnalysisError, Report, ReportEntry, build_report, entry_from_result, report_from_results
from .data import write_report_data
from .html import render_html
from .spec import AnalysisSpec, ModelChoice, ReportSpec, check_spec, load_spec, parse_spec, spec_text


@dataclass
class WrittenReport:
    html: Path
    data: Path | None
    pdf: Path | None
    pages: int = 0  # of the PDF


def default_data_path(html_path: str | Path) -> Path:
    return Path(html_path).with_suffix(".h5")


def write_report(report: Report, html_path: str | Path, *, data_path: str | Path | None = None, write_data: bool = True, spec_name: str = "report.toml") -> WrittenReport:
    """Write the HTML and the data file (default: beside the HTML, same name, .h5)."""
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(report, spec_name=spec_name), encoding="utf-8")
    data = None
    if write_data:
        data = Path(data_path) if data_path else default_data_path(html_path)
        write_report_data(data, report)
    return WrittenReport(html_path, data, None)


__all__ = [
    "AnalysisError",
    "AnalysisSpec",
    "ModelChoice",
    "Report",
    "ReportEntry",
    "ReportSpec",
    "WrittenReport",
    "build_report",
    "check_spec",
    "default_data_path",
    "entry_from_result",
    "load_spec",
    "parse_spec",
    "render_html",
    "report_from_results",
    "spec_text",
    "write_report",
    "write_report_data",
]
