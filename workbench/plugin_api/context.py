"""The narrow context an analysis sees: the model, the prompts, and the activation store.

Analyses ask the context for activations instead of running the model themselves,
so what the store already holds is read from disk and not recomputed. The context
opens and closes the store file itself and records whether anything came from it
(`reused_activations`, shown in every result's provenance).

    acts = ctx.activations(hooks)                      # every hook at once, in memory
    for name, array in ctx.activations_by_layer(hooks):  # one hook in memory at a time
        ...
    held = yield from ctx.ensure_stored(hooks)         # capture into the store first (progress)
    ctx.provided("causal-trace", "causal_trace")       # another plugin's public function
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..engines import BridgeEngine, Engine, read_chunks
from ..errors import InputError, StoreError
from ..hooks import HookSpec, catalog_for
from ..hooks.streaming import stream_activations
from ..models import LoadedModel
from ..progress import Job, sub_job

if TYPE_CHECKING:
    from ..store import ActivationStore, StoreHit
    from .discovery import PluginRegistry

# Above this many bytes, activations not in the store are handed out from a pass one hook
# at a time instead of all at once (1,024 tokens of SmolLM2 patterns: 1.1 GB).
IN_MEMORY_BUDGET_BYTES = 256 << 20


@dataclass
class AnalysisContext:
    model: LoadedModel
    prompts: list[str] = field(default_factory=list)
    prepend_bos: bool | None = None  # None: the tokenizer's own convention
    store_path: Path | None = None  # an activation store to read from (and fill, when fill_store)
    fill_store: bool = False
    reused_activations: bool = False  # set when any activations came from the store
    plugins: Any = None  # the PluginRegistry to find required plugins in (None: this process's)

    @property
    def prompt(self) -> str:
        if not self.prompts:
            raise InputError("This analysis needs a prompt.", "type a prompt (CLI: --prompt TEXT)")
        return self.prompts[0]

    @property
    def engine(self) -> Engine:
        """What runs the model (plugin API 1.2): `engine.run(tokens, reads, writes)` and
        `engine.decode_residual(x)` work on every engine (workbench.engines)."""
        return self.model.engine

    @property
    def device(self) -> torch.device:
        return self.model.engine.device

    def tokens(self, index: int = 0) -> list[int]:
        if not self.prompts:
            raise InputError("This analysis needs a prompt.", "type a prompt (CLI: --prompt TEXT)")
        return self.model.tokenize(self.prompts[index], prepend_bos=self.prepend_bos)

    def str_tokens(self, index: int = 0) -> list[str]:
        return self.model.str_tokens(self.tokens(index))

    def hook_names(self, patterns: str | Iterable[str]) -> list[str]:
        """Hook names (the keys the store uses) for names, globs or presets."""
        return [spec.name for spec in catalog_for(self.model.engine).resolve(patterns)]

    def for_prompts(self, prompts: list[str]) -> AnalysisContext:
        """The same model, store and BOS choice for other prompts (a compare prompt, say).
        Reuse is recorded on both contexts."""
        return _LinkedContext(self.model, list(prompts), self.prepend_bos, self.store_path, self.fill_store, plugins=self.plugins, parent=self)

    def note_reuse(self) -> None:
        self.reused_activations = True

    def provided(self, plugin_id: str, name: str) -> Callable[..., Any]:
        """A public function of a plugin this one lists in `requires` (plugin API 1.1)."""
        from .discovery import current_registry

        registry: PluginRegistry = self.plugins if self.plugins is not None else current_registry()
        return registry.provided(plugin_id, name)

    @contextmanager
    def stored_hit(self, hooks: list[str], index: int = 0, min_itemsize: int = 0) -> Iterator[Any]:
        """The store's hit (run, prompt) for these hooks of prompt `index`, or None, with the
        file open inside the block and closed after it. min_itemsize: ignore runs stored at
        a lower precision (4 for float32 when rounded values would change the answer)."""
        found = self.stored(hooks, index)
        if found is None:
            yield None
            return
        store, hit = found
        try:
            # A run stored at lower precision does not count when full precision is asked for.
            rounded = min_itemsize and any(hit.run.dataset(name).dtype.itemsize < min_itemsize for name in hooks)
            yield None if rounded else hit
        finally:
            store.close()

    def stored(self, hooks: list[str], index: int = 0) -> tuple[ActivationStore, StoreHit] | None:
        """(store, hit) of a complete store run holding these hooks for this prompt, or None.
        The caller must close the store. Plugin API 1.0; prefer `stored_hit` (a context
        manager that closes it) or `activations_by_layer`."""
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

    def ensure_stored(self, patterns: str | Iterable[str], index: int = 0) -> Job[bool]:
        """Generator: when the context fills its store and the store lacks these hooks for
        prompt `index`, capture them (yielding the capture's progress). Returns whether the
        store holds them now."""
        names = self.hook_names(patterns)
        with self.stored_hit(names, index) as hit:
            if hit is not None:
                return True
        if not (self.fill_store and self.store_path is not None):
            return False
        from ..capture import capture_activations

        job = capture_activations(self.model, [self.prompts[index]], names, self.store_path, prepend_bos=self.prepend_bos)
        yield from sub_job(job, 0, 1, 1, "capturing into the store")
        with self.stored_hit(names, index) as hit:
            return hit is not None

    def activations_by_layer(
        self, patterns: str | Iterable[str], index: int = 0, *, min_itemsize: int = 0, budget_bytes: int | None = None, count_reuse: bool = True
    ) -> Iterator[tuple[str, np.ndarray]]:
        """(hook name, activations of prompt `index` without the batch axis), one hook at a
        time in the order given: read from the store when it holds them all (one in
        memory at a time), else from one forward pass, handed over hook by hook when
        all of them would not fit budget_bytes (default IN_MEMORY_BUDGET_BYTES). Stopping early is fine: the store is
        closed and the pass ends."""
        specs = catalog_for(self.model.engine).resolve(patterns)
        names = [spec.name for spec in specs]
        with self.stored_hit(names, index, min_itemsize) as hit:
            if hit is not None:
                if count_reuse:  # False right after this run captured them itself
                    self.note_reuse()
                for name in names:
                    yield name, np.asarray(hit.run.read(name, hit.prompt))
                return
        ids = torch.tensor([self.tokens(index)], device=self.device)
        budget = IN_MEMORY_BUDGET_BYTES if budget_bytes is None else budget_bytes
        if not isinstance(self.model.engine, BridgeEngine):
            # Through the seam: every hook in one run when they fit the budget, else one run
            # per group of consecutive hooks that does (each run stops after its last hook).
            yield from _engine_activations(self, specs, ids, budget)
            return
        if _pass_bytes(self, specs, ids.shape[1]) <= budget:
            with torch.inference_mode():
                _, cache = self.model.bridge.run_with_cache(ids, names_filter=[s.canonical for s in specs], return_type=None)
            for spec in specs:
                yield spec.name, cache[spec.canonical][0].float().cpu().numpy()
            return
        by_name = {}
        for name, array in stream_activations(self.model.bridge, ids, [(s.name, s.canonical) for s in specs]):
            by_name[name] = array
            # hand them out in the order asked for (the model may compute them in another)
            while names and names[0] in by_name:
                first = names.pop(0)
                yield first, by_name.pop(first)

    def activations(self, patterns: str | Iterable[str], index: int = 0, *, min_itemsize: int = 0) -> dict[str, np.ndarray]:
        """Activations of prompt `index` for hook names/globs/presets, without the batch axis.

        Read from the activation store when it holds them; otherwise computed with one
        forward pass (and written to the store first when fill_store is set).
        """
        names = self.hook_names(patterns)
        captured = False
        if self.fill_store and self.store_path is not None:
            with self.stored_hit(names, index, min_itemsize) as hit:
                captured = hit is None
            if captured:
                from ..progress import run_to_completion

                run_to_completion(self.ensure_stored(names, index))
        # Reuse means read from the store without computing them now (API 1.0's meaning).
        return dict(self.activations_by_layer(names, index, min_itemsize=min_itemsize, budget_bytes=1 << 62, count_reuse=not captured))


def _engine_activations(ctx: AnalysisContext, specs: list[HookSpec], ids: torch.Tensor, budget: int) -> Iterator[tuple[str, np.ndarray]]:
    """The hooks (in the model's order, as resolved) through `engine.run`, in as few runs as
    the budget allows (a run reads up to its last hook and stops there)."""
    for chunk in read_chunks([spec.name for spec in specs], ctx.model.cfg, 1, int(ids.shape[1]), budget):
        with torch.inference_mode():
            run = ctx.model.engine.run(ids, reads=dict.fromkeys(chunk), logits=False)
        for name in chunk:
            yield name, run.activations.pop(name)[0].float().cpu().numpy()
        del run


def _pass_bytes(ctx: AnalysisContext, specs: Iterable[HookSpec], n_tokens: int) -> int:
    """What a pass's activations of these hooks take in float32 (patterns: heads x n x n)."""
    cfg = ctx.model.cfg
    per_hook = []
    for spec in specs:
        if spec.name.endswith("hook_pattern"):
            per_hook.append(ctx.model.n_heads * n_tokens * n_tokens)
        else:
            per_hook.append(max(int(getattr(cfg, "d_model", 1)), int(getattr(cfg, "d_mlp", 0) or 0), ctx.model.n_heads * int(getattr(cfg, "d_head", 1))) * n_tokens)
    return 4 * sum(per_hook)


class _LinkedContext(AnalysisContext):
    """A context for other prompts that reports reuse to the one it came from."""

    def __init__(self, *args: Any, parent: AnalysisContext, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parent = parent

    def note_reuse(self) -> None:
        self.reused_activations = True
        self._parent.note_reuse()
