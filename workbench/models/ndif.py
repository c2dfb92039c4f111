"""`ndif:<hf id>` models: what running on NDIF (nnsight's hosted service) needs, checked
before anything is loaded, so a missing key or network fails in seconds with the fix.

The key comes from the environment variable NDIF_API_KEY (as nnsight reads it); it is
passed to nnsight only, never stored in results, stores or reports.
"""

from __future__ import annotations

import os

from ..errors import ModelLoadError
from .specs import ModelSource

NDIF_KEY_VARIABLE = "NDIF_API_KEY"
NDIF_HOST_VARIABLE = "NDIF_HOST"
NDIF_DEFAULT_HOST = "https://api.ndif.us"
CONNECT_SECONDS = 3.0


def ndif_host() -> str:
    return os.environ.get(NDIF_HOST_VARIABLE) or NDIF_DEFAULT_HOST


def open_ndif(source: ModelSource) -> None:
    """Check the API key, then that NDIF answers; ModelLoadError saying what to set when
    either is missing. Remote runs themselves are not built yet, which is the last error."""
    from .loading import reachable

    if not os.environ.get(NDIF_KEY_VARIABLE, "").strip():
        raise ModelLoadError(
            f"{source.spec} runs on NDIF, which needs your API key, and {NDIF_KEY_VARIABLE} is not set.",
            f"set the environment variable {NDIF_KEY_VARIABLE} to the key of your NDIF account (https://login.ndif.us); it is never written into results or reports",
        )
    host = ndif_host()
    if not reachable(host, CONNECT_SECONDS):
        raise ModelLoadError(
            f"NDIF cannot be reached at {host} (no answer in {CONNECT_SECONDS:g} s), so {source.spec} cannot run.",
            f"connect to the internet and try again; {NDIF_HOST_VARIABLE} sets another server",
        )
    raise ModelLoadError(
        f"Running {source.spec} on NDIF is not built yet: this version runs the nnsight engine on local models only.",
        f"run a local model on the same engine with nnsight:<spec>, e.g. nnsight:smollm2, or {source.location} itself when it fits here",
    )
