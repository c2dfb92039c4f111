"""The models a user can load right now without a network."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import ModelLoadError
from ..paths import lab_models_dir
from .gguf_cache import converted_folder, embedded_gguf_path, is_converted
from .specs import LAB_PREFIX, lab_model_names
from .zoo import FAMILIES, ZOO_PREFIX, zoo_folder


@dataclass(frozen=True)
class CatalogEntry:
    spec: str
    kind: str
    description: str


def _embedded_entries() -> list[CatalogEntry]:
    try:
        path = embedded_gguf_path()
    except ModelLoadError as exc:
        return [CatalogEntry("smollm2", "embedded", f"NOT INSTALLED: {exc}")]
    state = "converted, fast load" if is_converted(converted_folder(path)) else "first load converts the GGUF file (~20 s)"
    return [CatalogEntry("smollm2", "embedded", f"SmolLM2-135M-Instruct (default; {state})")]


def _lab_entries() -> list[CatalogEntry]:
    entries = []
    for name in lab_model_names():
        meta_path = lab_models_dir() / name / "lab.json"
        description = "tiny lab model"
        if meta_path.is_file():
            try:
                description = json.loads(meta_path.read_text()).get("description", description)
            except (OSError, ValueError):
                pass
        entries.append(CatalogEntry(LAB_PREFIX + name, "lab", description))
    return entries


def _hub_cache_entries() -> list[CatalogEntry]:
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception:  # no cache folder yet, or an unreadable one: nothing cached
        return []
    entries = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        has_config = any(f.file_name == "config.json" for rev in repo.revisions for f in rev.files)
        if has_config:
            entries.append(CatalogEntry(repo.repo_id, "hub-cache", f"Hugging Face cache, {repo.size_on_disk_str}"))
    return entries


def _zoo_entries() -> list[CatalogEntry]:
    entries = []
    for name, family in FAMILIES.items():
        state = "built" if (zoo_folder(name) / "zoo.json").is_file() else "built on first use (~1 s)"
        entries.append(CatalogEntry(ZOO_PREFIX + name, "zoo", f"tiny random-weight {family.model_class} ({state}): {family.features}"))
    return entries


def available_models() -> list[CatalogEntry]:
    return _embedded_entries() + _lab_entries() + _zoo_entries() + _hub_cache_entries()
