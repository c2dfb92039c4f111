"""`workbench plugins --validate`: every reference a plugin declares imports, and every run
function accepts the parameters declared for it.

Discovery imports only the plugin's small declaration module; a typo in
"module:attribute" or a parameter renamed in the function but not in the declaration
would otherwise surface only when a user runs that analysis or opens that panel.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .plugin import Plugin, import_ref


def _signature_problems(what: str, function: Callable[..., Any], leading: list[str], declared: list[str]) -> list[str]:
    """leading: the positional arguments the runner passes first (ctx; ctx and result)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return []  # a builtin or C function: nothing to check
    parameters = list(signature.parameters.values())
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < len(leading) and not any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return [f"{what} takes {len(positional)} positional argument(s); the runner passes {', '.join(leading)} first"]
    named = {p.name for p in parameters[len(leading):] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters)
    problems = []
    unknown = [name for name in declared if name not in named and not takes_any]
    if unknown:
        problems.append(f"{what} does not accept the declared parameter(s) {', '.join(unknown)}")
    required = [
        p.name for p in parameters[len(leading):]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty and p.name not in declared
    ]
    if required:
        problems.append(f"{what} requires {', '.join(required)}, which the plugin does not declare as parameters")
    return problems


def _imported(what: str, ref: Any, problems: list[str]) -> Any:
    try:
        return import_ref(ref)
    except Exception as exc:  # any import error is a finding, reported with its reference
        problems.append(f"{what} {ref!r} does not import: {type(exc).__name__}: {exc}")
        return None


def validate_plugin(plugin: Plugin, import_panels: bool = True) -> list[str]:
    """What is wrong with a plugin's declaration (empty when nothing is)."""
    problems: list[str] = []
    analysis = plugin.analysis
    if analysis is not None:
        run = _imported("analysis run", analysis.run, problems)
        if run is not None:
            problems += _signature_problems("the analysis' run function", run, ["ctx"], [p.name for p in analysis.params])
        if analysis.cache_hooks is not None:
            _imported("cache_hooks", analysis.cache_hooks, problems)
    for query in plugin.queries:
        run = _imported(f"query {query.name!r}", query.run, problems)
        if run is not None:
            problems += _signature_problems(f"query {query.name!r}", run, ["ctx", "result"], [p.name for p in query.params])
    for ref in plugin.result_types:
        cls = _imported("result type", ref, problems)
        if cls is not None and not getattr(cls, "kind", ""):
            problems.append(f"result type {ref!r} sets no `kind`")
    for name, ref in plugin.provides.items():
        _imported(f"provided function {name!r}", ref, problems)
    if plugin.panel is not None and import_panels:
        _imported("panel", plugin.panel, problems)
    return problems
