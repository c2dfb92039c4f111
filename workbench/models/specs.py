"""Model specs: the strings users type to name a model, and what they resolve to."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError
from ..paths import lab_models_dir
from .zoo import FAMILIES, ZOO_PREFIX

EMBEDDED_NAMES = ("smollm2", "smollm2-135m-instruct")
DEFAULT_MODEL = EMBEDDED_NAMES[0]  # what the command line and the app load when no model is named
LAB_PREFIX = "lab:"
# The engine prefixes (workbench/engines): `nnsight:<any local spec>` runs the model through an
# nnsight trace here; `ndif:<hf id>` runs it on NDIF (nnsight's remote service).
ENGINE_PREFIXES = {"nnsight:": "nnsight", "ndif:": "ndif"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from and what runs it. kind is one of: embedded, lab, zoo, hub,
    folder, gguf; engine one of: bridge (TransformerBridge), nnsight, ndif."""

    kind: str
    spec: str
    location: str
    engine: str = "bridge"

    @property
    def base_spec(self) -> str:
        """The spec without its engine prefix ("nnsight:lab:induction" -> "lab:induction")."""
        return self.spec.split(":", 1)[1] if self.engine != "bridge" else self.spec

    @property
    def display_name(self) -> str:
        name = self._model_name()
        return name if self.engine == "bridge" else f"{name} ({self.engine})"

    def _model_name(self) -> str:
        if self.kind == "embedded":
            return "SmolLM2-135M-Instruct"
        if self.kind in ("lab", "zoo"):
            return self.base_spec
        if self.kind in ("folder", "gguf"):
            return Path(self.location).name
        return self.location


def lab_model_names() -> list[str]:
    root = lab_models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())


def parse_spec(spec: str) -> ModelSource:
    spec = (spec or "").strip()
    if not spec:
        raise ModelLoadError("No model given.", "pass a model spec such as 'smollm2', 'lab:induction', a Hub id, a folder or a .gguf file")
    for prefix, engine in ENGINE_PREFIXES.items():
        if spec.startswith(prefix):
            return _engine_spec(spec, spec[len(prefix):].strip(), engine)
    if spec.lower() in EMBEDDED_NAMES:
        return ModelSource("embedded", spec.lower(), "smollm2")
    if spec.startswith(LAB_PREFIX):
        name = spec[len(LAB_PREFIX):]
        folder = lab_models_dir() / name
        # A lab name is a name, not a path: lab:../../x would load any folder.
        if name not in lab_model_names():
            known = ", ".join(LAB_PREFIX + n for n in lab_model_names()) or "none found"
            raise ModelLoadError(f"Unknown lab model {spec!r}.", f"lab models shipped in assets/lab: {known}")
        return ModelSource("lab", spec, str(folder))
    if spec.startswith(ZOO_PREFIX):
        family = spec[len(ZOO_PREFIX):]
        if family not in FAMILIES:
            raise ModelLoadError(f"Unknown zoo model {spec!r}.", f"zoo models (tiny, random weights, built on first use): {', '.join(ZOO_PREFIX + f for f in FAMILIES)}")
        return ModelSource("zoo", spec, family)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}.", "check the path")
        return ModelSource("gguf", spec, str(path.resolve()))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"Folder {path} holds no config.json, so it is not a Hugging Face model folder.",
                "point at the folder that save_pretrained wrote",
            )
        return ModelSource("folder", spec, str(path.resolve()))
    looks_like_path = spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1
    if looks_like_path or not _HUB_ID.match(spec):
        raise ModelLoadError(
            f"Unknown model {spec!r}: not a known name, an existing folder, a .gguf file or a Hub id.",
            "run 'workbench models' to list the models available offline",
        )
    return ModelSource("hub", spec, spec)


def _engine_spec(spec: str, inner: str, engine: str) -> ModelSource:
    """`nnsight:<local spec>` or `ndif:<hf id>`."""
    if any(inner.startswith(prefix) for prefix in ENGINE_PREFIXES):
        raise ModelLoadError(f"{spec!r} names two engines.", "give one prefix: nnsight:<spec> or ndif:<hf id>")
    if engine == "ndif":
        if not inner or inner.count("/") > 1 or inner.startswith((".", "/", "~")) or not _HUB_ID.match(inner):
            raise ModelLoadError(f"{spec!r} does not name a Hugging Face model.", "NDIF runs hosted models by their Hub id, e.g. ndif:meta-llama/Llama-3.1-8B")
        return ModelSource("hub", spec, inner, engine)
    if not inner:
        raise ModelLoadError(f"{spec!r} names no model.", "put a model spec after the prefix, e.g. nnsight:smollm2 or nnsight:lab:induction")
    base = parse_spec(inner)
    return ModelSource(base.kind, spec, base.location, engine)
