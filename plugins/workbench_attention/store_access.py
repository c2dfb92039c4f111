"""Lazy reads of single heads from an activation store, for the panel's head switches (Qt-free).

A causal pattern is stored as a packed lower triangle, chunked one head of one prompt
per chunk, so one head costs one chunk read (about 10 ms for 1,024 tokens). The store
file is opened only for the read and closed right after, so analyses running in the
background can append runs to it meanwhile.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from workbench.errors import StoreError
from workbench.hooks.names import pattern_hooks
from workbench.store import ActivationStore
from workbench.store.layout import token_key


class StoredPatterns:
    """Attention patterns of one model's prompts in a store: located once per prompt, read per head."""

    def __init__(self, path: str | Path, fingerprint: str, n_layers: int, cache_size: int = 16):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.hooks = pattern_hooks(n_layers)
        self._where: dict[str, tuple[str, int]] = {}  # token key -> (run id, prompt index)
        self._recent: OrderedDict[tuple, np.ndarray] = OrderedDict()  # switching back to a head is free
        self.cache_size = cache_size

    def forget_recent(self) -> None:
        """Drop the cache of recently read heads (benchmarks time real reads)."""
        self._recent.clear()

    def _locate(self, store: ActivationStore, tokens) -> tuple | None:
        key = token_key(tokens)
        where = self._where.get(key)
        if where is not None:
            return store.run(where[0]), where[1]
        hit = store.find(self.fingerprint, tokens, self.hooks)
        if hit is None:
            return None
        self._where[key] = (hit.run.id, hit.prompt)
        return hit.run, hit.prompt

    def holds(self, tokens) -> bool:
        """Whether every layer's patterns of these tokens are in the store."""
        if not self.path.exists():
            return False
        try:
            with ActivationStore(self.path) as store:
                return self._locate(store, tokens) is not None
        except (StoreError, OSError, KeyError):
            return False

    def _read(self, tokens, layer: int, head: int | None) -> np.ndarray | None:
        cache_key = (token_key(tokens), layer, head)
        if cache_key in self._recent:
            self._recent.move_to_end(cache_key)
            return self._recent[cache_key]
        if not self.path.exists():
            return None
        try:
            with ActivationStore(self.path) as store:
                found = self._locate(store, tokens)
                if found is None:
                    return None
                run, prompt = found
                index = () if head is None else (head,)
                values = np.asarray(run.read(self.hooks[layer], prompt, index), dtype=np.float32)
        except (StoreError, OSError, KeyError):
            self._where.pop(token_key(tokens), None)
            return None
        self._recent[cache_key] = values
        while len(self._recent) > self.cache_size:
            self._recent.popitem(last=False)
        return values

    def head(self, tokens, layer: int, head: int) -> np.ndarray | None:
        """[n, n] pattern of one query head, or None when the store does not hold it."""
        return self._read(tokens, layer, head)

    def layer(self, tokens, layer: int) -> np.ndarray | None:
        """[heads, n, n] patterns of every head of a layer, or None."""
        return self._read(tokens, layer, None)
