"""The narrow context an analysis sees: the model, the prompts, and the activation store.

Analyses ask the context for activations instead of running the model themselves,
so what the store already holds is read from disk and not recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, StoreError
from ..hooks import HookCatalog
from ..models import LoadedModel


@dataclass
class AnalysisContext:
    model: LoadedModel
    prompts: list[str] = field(default_factory=list)
    prepend_bos: bool | None = None  # None: the tokenizer's own convention
    store_path: Path | None = None  # an activation store to read from (and fill, when fill_store)
    fill_store: bool = False
    reused_activations: bool = False  # set when any activations came from the store

    @property
    def prompt(self) -> str:
        if not self.prompts:
            raise InputError("This analysis needs a prompt.", "type a prompt (CLI: --prompt TEXT)")
        return self.prompts[0]

    @property
    def device(self) -> torch.device:
        return next(self.model.bridge.parameters()).device

    def tokens(self, index: int = 0) -> list[int]:
        if not self.prompts:
            raise InputError("This analysis needs a prompt.", "type a prompt (CLI: --prompt TEXT)")
        return self.model.tokenize(self.prompts[index], prepend_bos=self.prepend_bos)

    def str_tokens(self, index: int = 0) -> list[str]:
        return self.model.str_tokens(self.tokens(index))

    def hook_names(self, patterns) -> list[str]:
        """Hook names (the keys the store uses) for names, globs or presets."""
        return [spec.name for spec in HookCatalog(self.model.bridge).resolve(patterns)]

    def stored(self, hooks: list[str], index: int = 0):
        """(run, prompt index) of a complete store run holding these hooks for this prompt, or None."""
        if self.store_path is None or not Path(self.store_path).exists():
            return None
        from ..store import ActivationStore

        try:
            store = ActivationStore(self.store_path)
        except StoreError:
            return None
        hit = store.find(self.model.fingerprint, self.tokens(index), hooks)
        if hit is None:
            store.close()
            return None
        return store, hit

    def activations(self, patterns, index: int = 0) -> dict[str, np.ndarray]:
        """Activations of prompt `index` for hook names/globs/presets, without the batch axis.

        Read from the activation store when it holds them; otherwise computed with one
        forward pass (and written to the store first when fill_store is set).
        """
        specs = HookCatalog(self.model.bridge).resolve(patterns)
        names = [spec.name for spec in specs]
        found = self.stored(names, index)
        reused = found is not None
        if found is None and self.fill_store and self.store_path is not None:
            from ..capture import capture_activations
            from ..progress import run_to_completion

            run_to_completion(capture_activations(self.model, [self.prompts[index]], names, self.store_path, prepend_bos=self.prepend_bos))
            found = self.stored(names, index)
        if found is not None:
            store, hit = found
            try:
                self.reused_activations = self.reused_activations or reused
                return {name: np.asarray(hit.run.read(name, hit.prompt)) for name in names}
            finally:
                store.close()
        ids = torch.tensor([self.tokens(index)], device=self.device)
        with torch.inference_mode():
            _, cache = self.model.bridge.run_with_cache(ids, names_filter=[s.canonical for s in specs], return_type=None)
        return {spec.name: cache[spec.canonical][0].float().cpu().numpy() for spec in specs}
