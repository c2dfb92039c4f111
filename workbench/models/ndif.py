"""`ndif:<hf id>` models: the nnsight engine with its sessions sent to NDIF (nnsight's
hosted service, https://ndif.us), the weights never here.

What runs NDIF needs is checked before anything loads, so a missing key or network fails in
seconds with the fix. Then the model's config and tokenizer load from the Hub (they are
small) and its modules are built on the meta device: the engine needs the module tree to
name hook points, and the config for the model's sizes, but no weight.

The key comes from NDIF_API_KEY (the app's settings field sets it for the app's process),
else from nnsight's own saved key (`nnsight.CONFIG.set_default_api_key`). It is handed to
nnsight only: never stored in results, stores, reports or workspaces.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import TYPE_CHECKING

from ..errors import EngineError, ModelLoadError
from .specs import ModelSource

if TYPE_CHECKING:
    from .loading import LoadedModel

NDIF_KEY_VARIABLE = "NDIF_API_KEY"
NDIF_HOST_VARIABLE = "NDIF_HOST"
NDIF_DEFAULT_HOST = "https://api.ndif.us"
CONNECT_SECONDS = 3.0


def ndif_host() -> str:
    return os.environ.get(NDIF_HOST_VARIABLE) or NDIF_DEFAULT_HOST


def ndif_api_key() -> str:
    """The user's key: the environment's, else the one nnsight saved ('' when neither)."""
    key = os.environ.get(NDIF_KEY_VARIABLE, "").strip()
    if key:
        return key
    try:
        from nnsight import CONFIG

        return str(CONFIG.API.APIKEY or "").strip()
    except (ImportError, AttributeError):
        return ""


def open_ndif(source: ModelSource) -> str:
    """The API key, once it is set and NDIF answers; ModelLoadError saying what to set when
    either is missing."""
    from .loading import reachable

    key = ndif_api_key()
    if not key:
        raise ModelLoadError(
            f"{source.spec} runs on NDIF, which needs your API key, and {NDIF_KEY_VARIABLE} is not set.",
            f"set the environment variable {NDIF_KEY_VARIABLE} (or the NDIF key in the app's settings) to the key of your NDIF account (https://login.ndif.us); it is never written into results or reports",
        )
    host = ndif_host()
    if not reachable(host, CONNECT_SECONDS):
        raise ModelLoadError(
            f"NDIF cannot be reached at {host} (no answer in {CONNECT_SECONDS:g} s), so {source.spec} cannot run.",
            f"connect to the internet and try again; {NDIF_HOST_VARIABLE} sets another server",
        )
    return key


def load_ndif_model(source: ModelSource) -> LoadedModel:
    """A LoadedModel whose engine sends every session to NDIF."""
    from transformers import AutoConfig, AutoTokenizer

    from ..engines import NnsightEngine, RemoteMode
    from .loading import LoadedModel, _tokenizer_prepends_bos

    started = time.perf_counter()
    key = open_ndif(source)
    repo_id = source.location
    try:
        config = AutoConfig.from_pretrained(repo_id)
        tokenizer = AutoTokenizer.from_pretrained(repo_id)
    except OSError as exc:
        raise ModelLoadError(
            f"Could not read {repo_id}'s config or tokenizer from the Hugging Face Hub: {str(exc).splitlines()[0][:200]}",
            "check the id; a gated model (Llama) needs access granted on the Hub and HF_TOKEN set",
        ) from None
    try:
        engine = NnsightEngine(repo_id, tokenizer, remote=RemoteMode.ndif(ndif_host(), key))
    except EngineError as exc:
        raise ModelLoadError(f"Cannot run {source.spec} on NDIF: {exc.message}", exc.hint) from None
    dtype = str(getattr(config, "dtype", None) or "bfloat16").removeprefix("torch.")
    return LoadedModel(
        source=source,
        engine=engine,
        tokenizer=tokenizer,
        fingerprint=remote_fingerprint(repo_id, config),
        device="cpu",
        dtype=dtype,
        tokenizer_prepends_bos=_tokenizer_prepends_bos(tokenizer),
        load_seconds=time.perf_counter() - started,
    )


def remote_fingerprint(repo_id: str, config) -> str:
    """What names a hosted model's weights without reading them: its id and config (a stored
    run of another checkpoint under the same id is told apart by the config only)."""
    from .fingerprint import config_digest_source

    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"ndif:{repo_id}\0".encode())
    digest.update(config_digest_source(config.to_dict()).encode())
    return digest.hexdigest()
