"""The public plugin API. Plugin authors import from here (and, for panels, workbench.gui.panels).

    from workbench.plugin_api import Plugin, Analysis, Query, Int, Choice, Result, ReportSection, Figure, Table, Progress
"""

from ..progress import Progress
from ..results.base import Figure, ReportSection, Result, ResultMeta, Table
from .context import AnalysisContext
from .cost import LONG_JOB_SECONDS, Cost, Estimate, LongJobError, estimate, forward_flops, human_seconds
from .discovery import ENTRY_POINT_GROUP, PATH_VARIABLE, PluginRecord, PluginRegistry, current_registry, discover_plugins
from .params import Bool, Choice, Float, Int, IntList, Param, Text
from .plugin import API_VERSION, API_VERSION_TEXT, Analysis, Plugin, PluginError, Query, check_compatibility, import_ref
from .runner import PluginRunError, check_same_model, estimate_cost, run_analysis, run_query, summary_json

__all__ = [
    "API_VERSION",
    "API_VERSION_TEXT",
    "ENTRY_POINT_GROUP",
    "LONG_JOB_SECONDS",
    "PATH_VARIABLE",
    "Analysis",
    "AnalysisContext",
    "Bool",
    "Choice",
    "Cost",
    "Estimate",
    "Figure",
    "Float",
    "Int",
    "IntList",
    "LongJobError",
    "Param",
    "Plugin",
    "PluginError",
    "PluginRecord",
    "PluginRegistry",
    "PluginRunError",
    "Progress",
    "Query",
    "ReportSection",
    "Result",
    "ResultMeta",
    "Table",
    "Text",
    "check_compatibility",
    "check_same_model",
    "current_registry",
    "discover_plugins",
    "estimate",
    "estimate_cost",
    "forward_flops",
    "human_seconds",
    "import_ref",
    "run_analysis",
    "run_query",
    "summary_json",
]
