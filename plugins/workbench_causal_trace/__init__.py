"""Built-in plugin causal-trace (skeleton; being written)."""

from workbench.plugin_api import Plugin

plugin = Plugin(id="causal-trace", name="causal-trace", version="0.0.1", api_version="1.0", description="(in progress)")
