"""Applied weight edits on a loaded model: apply, undo and redo that restore the weights bit
for bit, the model fingerprint that follows them, edit files, and the edited model as a folder.

Undo never subtracts the update in floating point (W + ΔW - ΔW is not W): each applied
edit keeps exact copies of the edited matrix from before and after it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import torch

from ..errors import InputError
from .target import MlpOutput, mlp_output

if TYPE_CHECKING:
    from ..models import LoadedModel

EDIT_FILE_FORMAT = "workbench-rome-edit"
EDIT_FILE_VERSION = 1
STACK_KEY = "edit_stack"


@dataclass
class RomeEdit:
    """A rank-one update W += right ⊗ left of one layer's MLP output projection."""

    layer: int
    left: np.ndarray  # u [d_mlp]: C⁻¹k*, normalised
    right: np.ndarray  # [d_model]: (v* - W k*) / (u · k*)
    request: dict = field(default_factory=dict)
    hparams: dict = field(default_factory=dict)
    weight_name: str = ""
    base_fingerprint: str = ""  # the unedited model's
    label: str = ""
    # Set while applied: the edited matrix before and after, and the fingerprints.
    target: MlpOutput | None = field(default=None, repr=False)
    before: torch.Tensor | None = field(default=None, repr=False)
    after: torch.Tensor | None = field(default=None, repr=False)
    fingerprint_before: str = ""
    fingerprint_after: str = ""

    def delta(self, dtype=torch.float32) -> torch.Tensor:
        """ΔW as [d_out, d_in]."""
        return torch.outer(torch.from_numpy(self.right).float(), torch.from_numpy(self.left).float()).to(dtype)

    @property
    def update_norm(self) -> float:
        return float(np.linalg.norm(self.left) * np.linalg.norm(self.right))

    def applied_weights(self) -> tuple[MlpOutput, torch.Tensor, torch.Tensor]:
        """The edited matrix and its exact copies from before and after the edit (set by applying it)."""
        if self.target is None or self.before is None or self.after is None:
            raise RuntimeError(f"the edit {self.describe()!r} has never been applied")
        return self.target, self.before, self.after

    def restore_before(self) -> None:
        target, before, _ = self.applied_weights()
        with torch.no_grad():
            target.weight.copy_(before)

    def restore_after(self) -> None:
        target, _, after = self.applied_weights()
        with torch.no_grad():
            target.weight.copy_(after)

    def describe(self) -> str:
        if self.label:
            return self.label
        r = self.request
        return f"L{self.layer}: {r.get('template', '{}').replace('{}', r.get('subject', '?'))} → {str(r.get('target_new', '?')).strip()}"


def _derived_fingerprint(before: str, edit: RomeEdit) -> str:
    # Hashing the touched matrix (MBs) instead of the whole model (GBs) keeps apply quick;
    # the result differs from every other weight state the stack has produced.
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{before}|rome|{edit.layer}|{edit.weight_name}|".encode())
    _, _, after = edit.applied_weights()
    digest.update(after.contiguous().view(torch.uint8).reshape(-1).numpy().data)
    return digest.hexdigest()


class EditStack:
    """The edits applied to one model, in order, with the undone ones kept for redo."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.base_fingerprint = model.fingerprint
        self.applied: list[RomeEdit] = []
        self.undone: list[RomeEdit] = []
        self.lock = threading.Lock()

    @classmethod
    def of(cls, model) -> EditStack:
        stack = model.extra.get(STACK_KEY)
        if stack is None:
            stack = model.extra[STACK_KEY] = cls(model)
        return stack

    @classmethod
    def existing(cls, model) -> EditStack | None:
        return model.extra.get(STACK_KEY)

    def apply(self, edit: RomeEdit) -> RomeEdit:
        """Add ΔW to the weight in place (the bridge shares the HF weights, so it runs the edit)."""
        with self.lock:
            target = mlp_output(self.model, edit.layer)
            edit.target, edit.weight_name = target, target.name
            edit.base_fingerprint = edit.base_fingerprint or self.base_fingerprint
            weight = target.weight
            with torch.no_grad():
                edit.before = weight.detach().clone()
                weight.add_(target.as_out_in(edit.delta(torch.float32)).to(weight.dtype))
                edit.after = weight.detach().clone()
            edit.fingerprint_before = self.model.fingerprint
            edit.fingerprint_after = _derived_fingerprint(edit.fingerprint_before, edit)
            self.model.fingerprint = edit.fingerprint_after
            self.applied.append(edit)
            self.undone.clear()
            return edit

    def undo(self) -> RomeEdit | None:
        with self.lock:
            if not self.applied:
                return None
            edit = self.applied.pop()
            edit.restore_before()
            self.model.fingerprint = edit.fingerprint_before
            self.undone.append(edit)
            return edit

    def redo(self) -> RomeEdit | None:
        with self.lock:
            if not self.undone:
                return None
            edit = self.undone.pop()
            edit.restore_after()
            self.model.fingerprint = edit.fingerprint_after
            self.applied.append(edit)
            return edit

    def undo_all(self) -> None:
        while self.applied:
            self.undo()

    def history(self) -> list[tuple[str, bool]]:
        """(description, applied) of every edit, oldest first, the undone ones last."""
        return [(e.describe(), True) for e in self.applied] + [(e.describe(), False) for e in reversed(self.undone)]


def base_fingerprint(model) -> str:
    """The fingerprint of the model without any of its edits."""
    stack = EditStack.existing(model)
    return stack.base_fingerprint if stack is not None else model.fingerprint


# -- files ------------------------------------------------------------------------------------------


def save_edit(path: str | Path, edit: RomeEdit) -> Path:
    path = Path(path)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = EDIT_FILE_FORMAT
        f.attrs["version"] = EDIT_FILE_VERSION
        f.attrs["layer"] = edit.layer
        f.attrs["weight_name"] = edit.weight_name
        f.attrs["model_fingerprint"] = edit.base_fingerprint
        f.attrs["request"] = json.dumps(edit.request)
        f.attrs["hparams"] = json.dumps(edit.hparams)
        f.attrs["label"] = edit.label
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        f.create_dataset("left", data=edit.left.astype(np.float32))
        f.create_dataset("right", data=edit.right.astype(np.float32))
    return path


def load_edit(path: str | Path, model) -> RomeEdit:
    """An edit from a file, checked against model (the unedited weights must be the same)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The edit file {path} does not exist.", "choose a file written by 'Save edit…'")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != EDIT_FILE_FORMAT:
                raise InputError(f"{path} is not a ROME edit file.", "choose a file written by 'Save edit…'")
            edit = RomeEdit(
                layer=int(f.attrs["layer"]),
                left=f["left"][()],
                right=f["right"][()],
                request=json.loads(f.attrs["request"]),
                hparams=json.loads(f.attrs["hparams"]),
                weight_name=str(f.attrs["weight_name"]),
                base_fingerprint=str(f.attrs["model_fingerprint"]),
                label=str(f.attrs.get("label", "")),
            )
    except OSError as exc:
        raise InputError(f"{path} is not a readable HDF5 file: {exc}", "choose a file written by 'Save edit…'") from exc
    expected = base_fingerprint(model)
    if edit.base_fingerprint != expected:
        raise InputError(
            f"The edit in {path.name} was made for another model (fingerprint {edit.base_fingerprint[:12]}…, this one is {expected[:12]}…).",
            "load the model the edit was made on",
        )
    target = mlp_output(model, edit.layer)
    if target.name != edit.weight_name or edit.left.shape != (int(model.cfg.d_mlp),) or edit.right.shape != (int(model.cfg.d_model),):
        raise InputError(f"The edit in {path.name} does not fit {model.name}'s layer {edit.layer}.", "load the model the edit was made on")
    return edit


def save_edited_model(model, folder: str | Path) -> Path:
    """The model as it is now (edits included) as a Hugging Face folder that load_model reads."""
    from ..models.fingerprint import model_weights

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf = model.bridge.original_model
    names = set(model.weight_names) if model.weight_names else None
    # The bridge wraps HF modules in place; save under the HF names only.
    weights = {n: t.detach().clone().contiguous() for n, t in model_weights(hf).items() if names is None or n in names}
    tied = getattr(hf.config, "tie_word_embeddings", False)
    if tied:
        weights.pop("lm_head.weight", None)
    from safetensors.torch import save_file

    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    hf.config.save_pretrained(folder)
    if getattr(hf, "generation_config", None) is not None:
        try:
            hf.generation_config.save_pretrained(folder)
        except Exception:
            pass  # a generation config is optional for loading
    model.tokenizer.save_pretrained(folder)
    stack = EditStack.existing(model)
    if stack is not None:
        (folder / "workbench-edits.json").write_text(
            json.dumps({"base_fingerprint": stack.base_fingerprint, "edits": [{"layer": e.layer, "request": e.request} for e in stack.applied]}, indent=2) + "\n",
            encoding="utf-8",
        )
    return folder


class applied_temporarily:
    """Context manager: the edit applied for the duration of the block, outside the model's edit
    stack (its history and redo list stay as they are), then the weight and fingerprint restored
    exactly. Used by evaluations that edit, measure and move on."""

    def __init__(self, model, edit: RomeEdit):
        self.model, self.edit = model, edit

    def __enter__(self) -> RomeEdit:
        edit, model = self.edit, self.model
        target = mlp_output(model, edit.layer)
        edit.target, edit.weight_name = target, target.name
        with torch.no_grad():
            edit.before = target.weight.detach().clone()
            target.weight.add_(target.as_out_in(edit.delta(torch.float32)).to(target.weight.dtype))
            edit.after = target.weight.detach().clone()
        edit.fingerprint_before = model.fingerprint
        edit.fingerprint_after = _derived_fingerprint(edit.fingerprint_before, edit)
        model.fingerprint = edit.fingerprint_after
        return edit

    def __exit__(self, *exc) -> None:
        self.edit.restore_before()
        self.model.fingerprint = self.edit.fingerprint_before
        target, before, _ = self.edit.applied_weights()
        if not torch.equal(target.weight, before):
            raise RuntimeError("restoring the weights after a temporary edit did not give them back exactly")
