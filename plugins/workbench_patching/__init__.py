"""Built-in plugin patching (skeleton; being written)."""

from workbench.plugin_api import Plugin

plugin = Plugin(id="patching", name="patching", version="0.0.1", api_version="1.0", description="(in progress)")
