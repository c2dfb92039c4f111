"""Built-in plugins rome and rome-eval (skeleton; being written)."""

from workbench.plugin_api import Plugin

plugin = Plugin(id="rome", name="rome", version="0.0.1", api_version="1.0", description="(in progress)")
eval_plugin = Plugin(id="rome-eval", name="rome-eval", version="0.0.1", api_version="1.0", description="(in progress)")
