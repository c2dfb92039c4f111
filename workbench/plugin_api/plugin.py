"""What a plugin declares: its identity, the API version it targets, and its contributions.

A plugin module stays cheap to import: it builds one `Plugin` and names its heavy
parts (the run function, the panel class) as "module:attribute" strings that are
imported on first use. That keeps `workbench plugins` fast and keeps Qt out of
headless runs.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from ..errors import WorkbenchError
from .params import Param, resolve_params

# Major changes break plugins; minor ones only add. A plugin written for 1.x runs on
# any host 1.y with y >= x.
API_VERSION = (1, 2)  # 1.1: queries, requires/provides, ctx.activations_by_layer; 1.2: engines, Analysis.cost, weights_in_place
API_VERSION_TEXT = f"{API_VERSION[0]}.{API_VERSION[1]}"

_ID = re.compile(r"^[a-z][a-z0-9\-]*$")


class PluginError(WorkbenchError):
    """A plugin is broken: it failed to import, targets another API, or raised."""


def parse_api_version(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(text))
    if not match:
        raise PluginError(f"API version {text!r} is not MAJOR.MINOR.", f"declare api_version='{API_VERSION_TEXT}'")
    return int(match.group(1)), int(match.group(2))


def check_compatibility(api_version: str, host: tuple[int, int] = API_VERSION) -> None:
    """Raise PluginError unless a plugin written for api_version runs on this host."""
    major, minor = parse_api_version(api_version)
    if major != host[0]:
        raise PluginError(
            f"written for plugin API {major}.{minor}; this workbench provides {host[0]}.{host[1]}",
            "update the plugin" if major < host[0] else "upgrade the workbench",
        )
    if minor > host[1]:
        raise PluginError(f"needs plugin API {major}.{minor}; this workbench provides {host[0]}.{host[1]}", "upgrade the workbench")


def import_ref(ref: Any) -> Any:
    """Resolve "package.module:attribute" (or pass an object through)."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attribute = ref.partition(":")
    module = importlib.import_module(module_name)
    target: Any = module
    for part in filter(None, attribute.split(".")):
        target = getattr(target, part)
    return target


@dataclass
class Analysis:
    """A headless computation: typed parameters and a run function.

    run(ctx, **params) is a generator that yields workbench.progress.Progress and
    returns a Result; ctx is an AnalysisContext (model, prompts, activation store).
    """

    run: Callable[..., Any] | str
    params: list[Param] = field(default_factory=list)
    needs_prompt: bool = True
    multi_prompt: bool = False  # reads every prompt of the context, not only the first
    cache_hooks: Callable[..., list[str]] | str | None = None  # hooks it reads, for store reuse
    # API 1.2 --------------------------------------------------------------------------
    # The engines (workbench.engines) it runs on. An analysis that reaches only
    # through ctx.engine and ctx.activations* runs on every engine; one that uses
    # ctx.model.bridge runs on "bridge" only, and is refused with a clear message elsewhere.
    engines: tuple[str, ...] = ("bridge",)
    # cost(ctx, **params) -> workbench.plugin_api.Cost: its forward passes, stated before it
    # runs, so the runner can show the estimate and ask before a job of hours.
    cost: Callable[..., Any] | str | None = None
    # Reads or writes weight matrices themselves, not only through forward passes: it cannot
    # run on weights a device map offloaded (empty until a forward pass copies them in), nor
    # on NDIF, where they stay on the server. True: on every engine; a tuple: on those engines
    # only (ROME edits the bridge's weights, and runs elsewhere as an intervention).
    weights_in_place: bool | tuple[str, ...] = False

    def weights_in_place_on(self, engine: str) -> bool:
        """Whether it reads or writes weight matrices themselves on this engine."""
        return self.weights_in_place if isinstance(self.weights_in_place, bool) else engine in self.weights_in_place

    def cost_function(self) -> Callable[..., Any] | None:
        return None if self.cost is None else cast(Callable[..., Any], import_ref(self.cost))

    def run_function(self) -> Callable[..., Any]:
        return cast(Callable[..., Any], import_ref(self.run))

    def resolve(self, given: dict[str, Any] | None = None, texts: dict[str, str] | None = None) -> dict[str, Any]:
        return resolve_params(self.params, given, texts)


@dataclass
class Query:
    """A follow-up on a plugin's result: another head, layer or prompt of what it showed.

    run(ctx, result, **params) yields Progress and returns a Result (usually the given
    result's type, with the asked-for part filled in). It runs through the same runner as
    the analysis (`run_query`): parameters validated, the result's model checked once,
    provenance merged, progress and cancel as for any job. Panels call queries and draw
    what they return; reports and `workbench run --query` use them too.
    """

    name: str
    run: Callable[..., Any] | str
    params: list[Param] = field(default_factory=list)
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _ID.match(self.name):
            raise PluginError(f"Query name {self.name!r} is not valid.", "use lower-case letters, digits and dashes, starting with a letter")

    def run_function(self) -> Callable[..., Any]:
        return cast(Callable[..., Any], import_ref(self.run))

    def resolve(self, given: dict[str, Any] | None = None, texts: dict[str, str] | None = None) -> dict[str, Any]:
        return resolve_params(self.params, given, texts)


@dataclass
class Plugin:
    """Everything a plugin contributes. Every field but id and name is optional."""

    id: str
    name: str
    version: str = "0.1.0"
    api_version: str = API_VERSION_TEXT
    description: str = ""
    analysis: Analysis | None = None
    result_types: list[Any] = field(default_factory=list)  # Result subclasses or "module:Class"
    panel: Any = None  # a QWidget subclass of workbench.gui.panels.AnalysisPanel, or "module:Class"
    report_help: str = ""  # one sentence on how to read this plugin's results
    # API 1.1 --------------------------------------------------------------------------
    queries: list[Query] = field(default_factory=list)  # follow-ups on its results (drill-downs)
    provides: dict[str, Any] = field(default_factory=dict)  # public functions for other plugins: name -> "module:attr"
    requires: list[str] = field(default_factory=list)  # ids of plugins whose `provides` this one uses

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID.match(self.id):
            raise PluginError(f"Plugin id {self.id!r} is not valid.", "use lower-case letters, digits and dashes, starting with a letter")
        if not self.name:
            raise PluginError(f"Plugin {self.id!r} has no name.", "give it a human-readable name")
        names = [q.name for q in self.queries]
        if len(set(names)) != len(names):
            raise PluginError(f"Plugin {self.id!r} declares a query name twice ({', '.join(sorted(n for n in set(names) if names.count(n) > 1))}).", "give every query its own name")
        if self.id in self.requires:
            raise PluginError(f"Plugin {self.id!r} requires itself.", "list other plugins' ids in requires")

    def query(self, name: str) -> Query:
        """The query called name, or PluginError naming the ones there are."""
        for query in self.queries:
            if query.name == name:
                return query
        known = ", ".join(q.name for q in self.queries) or "none"
        raise PluginError(f"{self.name} has no query {name!r}.", f"its queries: {known}")

    def provided(self, name: str) -> Callable[..., Any]:
        """One of this plugin's public functions (imported on first use)."""
        if name not in self.provides:
            known = ", ".join(sorted(self.provides)) or "none"
            raise PluginError(f"Plugin {self.id!r} provides no {name!r}.", f"it provides: {known}")
        return cast(Callable[..., Any], import_ref(self.provides[name]))

    def result_classes(self) -> list[type]:
        return [import_ref(ref) for ref in self.result_types]

    def panel_class(self) -> type | None:
        return import_ref(self.panel) if self.panel is not None else None
