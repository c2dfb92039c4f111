"""How values read in a report, shared by the HTML and PDF renderers so both say the same."""

from __future__ import annotations

from typing import Any

import numpy as np


def format_value(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        shown = ", ".join(format_value(v) for v in items[:12])
        return f"[{shown}{', …' if len(items) > 12 else ''}]"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {format_value(v)}" for k, v in value.items())
    if value is None:
        return "—"
    return str(value)


def provenance_rows(entry, report) -> list[tuple[str, str]]:
    """Where a result came from, in rows; what every result shares with the report is left out."""
    result = entry.result
    meta = result.meta if result is not None else None
    if meta is None:
        return []
    rows = [("created", meta.created), ("run time", f"{meta.seconds:.2f} s"), ("activations", "read from the store" if meta.reused_activations else "computed")]
    if meta.model_fingerprint and meta.model_fingerprint != report.model_fingerprint:
        rows.append(("model", f"{meta.model_spec} (fingerprint {meta.model_fingerprint})"))
    if list(meta.prompts) != list(report.prompts):
        rows.append(("prompts", " | ".join(meta.prompts) if meta.prompts else "(none)"))
    if meta.prepend_bos is not None:
        rows.append(("BOS", "prepended" if meta.prepend_bos else "not prepended"))
    if meta.dtype:
        half = " (half precision: the model computes slightly differently than in float32)" if meta.half_precision else ""
        rows.append(("computed on", f"{meta.device or 'cpu'}, {meta.dtype}{half}"))
    rows.append(("result kind", result.kind))
    return rows
