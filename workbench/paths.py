"""Where the workbench keeps things on disk."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir_location() -> Path:
    """Where the user cache folder is, without creating it; WORKBENCH_CACHE_DIR overrides it."""
    override = os.environ.get("WORKBENCH_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("interpretability-workbench"))


def cache_dir() -> Path:
    """User cache folder (converted models, fingerprints), created when missing."""
    path = cache_dir_location()
    path.mkdir(parents=True, exist_ok=True)
    return path


def assets_dir() -> Path:
    override = os.environ.get("WORKBENCH_ASSETS_DIR")
    return Path(override) if override else REPO_ROOT / "assets"


def lab_models_dir() -> Path:
    return assets_dir() / "lab"
