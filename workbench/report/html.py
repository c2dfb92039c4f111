"""A Report as one self-contained HTML file: inline SVG and data: images, inline CSS, no scripts.

It must read offline and print well, so nothing is fetched (no links, fonts or
scripts from elsewhere), figures never break across printed pages, and every
piece of user text (prompts, titles, table cells, the spec) is escaped.
"""

from __future__ import annotations

import base64
import re
from html import escape
from typing import Any

from ..results.base import Figure, Table
from .build import Report, ReportEntry
from .format import format_value, provenance_rows

CSS = """
:root { --ink: #1d232b; --muted: #5b6570; --rule: #d5dbe1; --soft: #f4f6f8; --accent: #2f5d8a; --bad: #a3261b; }
* { box-sizing: border-box; }
html { font-family: "DejaVu Sans", "Helvetica Neue", Helvetica, Arial, sans-serif; font-size: 15px; color: var(--ink); }
body { margin: 0; background: white; }
main { max-width: 980px; margin: 0 auto; padding: 28px 32px 60px; }
h1 { font-size: 1.9rem; margin: 0 0 4px; }
h2 { font-size: 1.35rem; margin: 34px 0 6px; padding-top: 10px; border-top: 2px solid var(--accent); }
h3 { font-size: 1.02rem; margin: 20px 0 6px; }
h2, h3 { break-after: avoid; page-break-after: avoid; }
p { line-height: 1.45; margin: 6px 0; }
.subtitle { color: var(--muted); margin: 0 0 18px; }
.how { background: var(--soft); border-left: 4px solid var(--accent); padding: 8px 12px; }
.plugin { color: var(--muted); font-size: 0.9rem; }
figure { margin: 14px 0 18px; break-inside: avoid; page-break-inside: avoid; }
figure .title { font-weight: bold; margin-bottom: 4px; }
figure svg, figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 0.9rem; margin-top: 4px; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 0.88rem; }
caption { text-align: left; font-weight: bold; padding-bottom: 4px; caption-side: top; }
th, td { border-bottom: 1px solid var(--rule); padding: 3px 10px 3px 4px; text-align: left; vertical-align: top; }
th { background: var(--soft); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
thead { display: table-header-group; }
tr { break-inside: avoid; page-break-inside: avoid; }
.facts th { background: none; color: var(--muted); font-weight: normal; width: 11em; }
.text { white-space: pre-wrap; font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.85rem; }
pre { background: var(--soft); border: 1px solid var(--rule); padding: 10px 12px; font-size: 0.8rem; white-space: pre-wrap; overflow-wrap: anywhere; }
.error { border: 1px solid var(--bad); border-left-width: 4px; padding: 8px 12px; color: var(--bad); }
.error pre { color: var(--ink); font-size: 0.72rem; }
nav ol { margin: 4px 0 0; padding-left: 1.4em; }
nav a { color: var(--accent); text-decoration: none; }
.note { font-size: 0.92rem; }
@page { size: A4; margin: 16mm 14mm 18mm; }
@media print {
  html { font-size: 10.5pt; }
  main { max-width: none; padding: 0; }
  h2 { margin-top: 18pt; }
  nav a { color: var(--ink); }
  pre { white-space: pre-wrap; }
  /* A figure taller than a page would be cut, so it is shrunk to one (ratio kept). */
  figure svg, figure img { max-height: 235mm; width: auto; }
  figure .title { break-after: avoid; page-break-after: avoid; }
}
"""

_XML_PROLOGUE = re.compile(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>", re.IGNORECASE)
# Inside HTML the parser puts <svg> in the SVG namespace itself; dropping the declarations
# leaves the file with no URL at all, which makes "no external references" checkable.
_NAMESPACE = re.compile(r"\s+xmlns(:\w+)?\s*=\s*(['\"])[^'\"]*\2")


def inline_svg(svg: str) -> str:
    return _NAMESPACE.sub("", _XML_PROLOGUE.sub("", svg)).strip()


def _figure(figure: Figure) -> str:
    title = f"<div class='title'>{escape(figure.title)}</div>" if figure.title else ""
    caption = f"<figcaption>{escape(figure.caption)}</figcaption>" if figure.caption else ""
    if figure.svg:
        body = inline_svg(figure.svg)
    elif figure.png:
        data = base64.b64encode(figure.png).decode("ascii")
        body = f"<img alt='{escape(figure.title, quote=True)}' src='data:image/png;base64,{data}'>"
    else:
        body = "<p class='plugin'>(empty figure)</p>"
    return f"<figure>{title}{body}{caption}</figure>"


def _cell(value: Any) -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"<td class='num'>{escape(format_value(value))}</td>" if numeric else f"<td>{escape(format_value(value))}</td>"


def _table(table: Table, css_class: str = "") -> str:
    klass = f" class='{css_class}'" if css_class else ""
    head = "".join(f"<th>{escape(str(c))}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in table.rows)
    caption = f"<caption>{escape(table.title)}</caption>" if table.title else ""
    return f"<table{klass}>{caption}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _facts(rows: list[tuple[str, Any]], css_class: str = "facts") -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(format_value(v))}</td></tr>" for k, v in rows)
    return f"<table class='{css_class}'><tbody>{body}</tbody></table>"


def _prompts(prompts: list[str]) -> str:
    if not prompts:
        return "<p class='plugin'>(no prompt)</p>"
    items = "".join(f"<li><span class='text'>{escape(p)}</span></li>" for p in prompts)
    return f"<ol>{items}</ol>"


def _entry(index: int, entry: ReportEntry, report: Report) -> str:
    out = [f"<section class='analysis' id='analysis-{index}'>"]
    section = entry.section
    out.append(f"<h2>{index}. {escape(entry.title)}</h2>")
    version = f" {entry.plugin_version}" if entry.plugin_version else ""
    out.append(f"<p class='plugin'>plugin <b>{escape(entry.plugin_id)}</b>{escape(version)}</p>")
    if entry.error is not None:
        out.append("<div class='error'><p><b>This analysis failed; the others are unaffected.</b></p>")
        out.append(f"<p>{escape(entry.error.message)}</p>")
        if entry.error.hint:
            out.append(f"<p>Hint: {escape(entry.error.hint)}</p>")
        if entry.error.details:
            out.append(f"<pre>{escape(entry.error.details)}</pre>")
        out.append("</div>")
    if section is not None:
        how = section.how_to_read or entry.how_to_read
        if how:
            out.append(f"<p class='how'><b>How to read it.</b> {escape(how)}</p>")
        out.extend(_figure(f) for f in section.figures)
        tables = list(section.tables)
        if not tables and entry.result is not None:
            numbers = [[k, v] for k, v in entry.result.to_json_dict().items() if not isinstance(v, (list, dict))]
            if numbers:
                tables.append(Table("Key numbers", ["quantity", "value"], numbers))
        out.extend(_table(t) for t in tables)
        out.extend(f"<p class='note'>{escape(n)}</p>" for n in section.notes)
    out.append("<h3>Parameters</h3>")
    out.append(_facts(sorted(entry.params.items())) if entry.params else "<p class='plugin'>(none)</p>")
    rows = provenance_rows(entry, report)
    if rows:
        out.append("<h3>Provenance</h3>")
        out.append(_facts(rows))
    out.append("</section>")
    return "\n".join(out)


def render_html(report: Report, *, spec_name: str = "report.toml") -> str:
    """The report as HTML text (one file, nothing external)."""
    model = report.model_name or report.model_spec or "unknown model"
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<meta name='generator' content='Interpretability Workbench'>",
        f"<title>{escape(report.title)}</title>",
        f"<style>{CSS}</style>",
        "</head><body><main>",
        f"<h1>{escape(report.title)}</h1>",
        f"<p class='subtitle'>{escape(report.created)} · {escape(model)}</p>",
    ]
    facts = [
        ("created", report.created),
        ("model", report.model_spec),
        ("model name", report.model_name),
        ("fingerprint", report.model_fingerprint),
        ("analyses", f"{len(report.entries)} ({len(report.failed)} failed)" if report.failed else str(len(report.entries))),
    ]
    if report.seconds:
        facts.append(("built in", f"{report.seconds:.1f} s"))
    parts.append(_facts([(k, v) for k, v in facts if v not in ("", None)]))
    parts.append("<h3>Prompts</h3>")
    parts.append(_prompts(report.prompts))
    links = "".join(
        f"<li><a href='#analysis-{i}'>{escape(e.title)}</a>{' (failed)' if e.error else ''}</li>" for i, e in enumerate(report.entries, start=1)
    )
    parts.append(f"<nav><h3>Contents</h3><ol>{links}<li><a href='#reproduce'>Reproduce</a></li></ol></nav>")
    parts.extend(_entry(i, e, report) for i, e in enumerate(report.entries, start=1))
    parts.append("<section id='reproduce'><h2>Reproduce</h2>")
    if report.spec_text:
        parts.append(f"<p>Save this spec as <code>{escape(spec_name)}</code> and run <code>workbench report {escape(spec_name)} --out report.html</code>:</p>")
        parts.append(f"<pre>{escape(report.spec_text)}</pre>")
    parts.append("<h3>Library versions</h3>")
    parts.append(_facts(sorted(report.versions.items())))
    parts.append("</section></main></body></html>")
    return "\n".join(parts) + "\n"
