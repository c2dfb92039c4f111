"""Model loading: specs, GGUF conversion, fingerprints and the loaded-model handle."""

from .catalog import available_models
from .loading import DTYPES, LoadedModel, load_hf_model, load_model
from .specs import DEFAULT_MODEL, ModelSource, parse_spec

__all__ = ["DEFAULT_MODEL", "DTYPES", "LoadedModel", "ModelSource", "available_models", "load_hf_model", "load_model", "parse_spec"]
