"""Reading activation stores lazily: runs, tokens, and slices of activations."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import StoreError
from .layout import (
    LAYOUT_DENSE,
    LAYOUT_LOWER_TRIANGLE,
    STATUS_COMPLETE,
    STATUS_DAMAGED,
    STATUS_WRITING,
    link_problem,
    open_store_file,
    token_key,
    tril_size,
    unpack_lower_triangle,
)
from .ragged import CHECKSUM_KIND, EXTENT_RULES, STORAGE_RAGGED, RaggedShape, checksum, slot_starts

# A selection within a prompt's per-prompt axes, e.g. (head,); None leaves an axis whole.
Index = tuple[int | slice | None, ...]


def _failure(exc: BaseException) -> str:
    """HDF5's message without its error-stack detail."""
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text.split(" (")[0].strip() or type(exc).__name__


def _attr(value: object) -> Any:
    """An HDF5 attribute as Python: text decoded, JSON text parsed, numpy scalars unwrapped."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


class StoredRun:
    """One run in a store. Nothing is read until asked for."""

    def __init__(self, group: h5py.Group):
        self._group = group
        self.id = group.name.rsplit("/", 1)[-1]
        self._starts: dict[str, tuple[RaggedShape, np.ndarray]] = {}
        self._checked: dict[str, str | None] = {}

    @classmethod
    def unreadable(cls, run_id: str, reason: str) -> StoredRun:
        """A run whose group itself cannot be opened: listed as damaged, never read."""
        run = cls.__new__(cls)
        run._group, run.id = None, run_id
        run.damage = reason
        return run

    @property
    def attrs(self) -> dict[str, Any]:
        if self._group is None:
            return {}
        return {key: _attr(value) for key, value in self._group.attrs.items()}

    @functools.cached_property
    def damage(self) -> str | None:
        """Why the run cannot be trusted, or None when its structure holds together.

        HDF5 is not journalled: a process killed while HDF5 was creating a run's
        datasets can leave metadata that points past the end of the file. And a file
        can be crafted: shapes, offsets and sizes are checked against each other and
        against the bytes actually stored before anything is read or allocated.
        """
        try:
            return _structure_problem(self._group)
        except (KeyError, OSError, RuntimeError, ValueError, TypeError) as exc:
            return _failure(exc)

    def activations_damage(self, name: str) -> str | None:
        """Why one hook's activations cannot be trusted, or None (checked once per run object)."""
        if name not in self._checked:
            try:
                self._checked[name] = _activations_problem(self._group, name, self.lengths)
            except (KeyError, OSError, RuntimeError, ValueError, TypeError) as exc:
                self._checked[name] = _failure(exc)
        return self._checked[name]

    @functools.cached_property
    def full_damage(self) -> str | None:
        """The run's structure and every hook's activations checked: what `inspect` and
        compaction go by (serving checks a hook when it is first read)."""
        if self.damage is not None:
            return self.damage
        for name in self.hooks:
            problem = self.activations_damage(name)
            if problem is not None:
                return problem
        return None

    @property
    def status(self) -> str:
        if self.damage is not None:
            return STATUS_DAMAGED
        return str(_attr(self._group.attrs.get("status", STATUS_WRITING)))

    @property
    def complete(self) -> bool:
        return self.status == STATUS_COMPLETE

    @property
    def fingerprint(self) -> str:
        return str(self.attrs.get("model_fingerprint", ""))

    @property
    def n_prompts(self) -> int:
        return int(self._group["offsets"].shape[0] - 1)

    @property
    def hooks(self) -> list[str]:
        return list(self._group["acts"].keys())

    def canonical_names(self) -> dict[str, str]:
        return {name: _attr(ds.attrs.get("canonical_name", name)) for name, ds in self._group["acts"].items()}

    def resolve(self, hook: str) -> str:
        """The stored name for a hook given by its legacy or canonical name."""
        acts = self._group["acts"]
        if hook in acts:
            return hook
        for name, canonical in self.canonical_names().items():
            if canonical == hook:
                return name
        raise StoreError(f"Run {self.id} holds no activations for {hook!r}.", f"it holds: {', '.join(self.hooks) or 'none'}")

    def _span(self, prompt: int) -> tuple[int, int]:
        if not 0 <= prompt < self.n_prompts:
            raise StoreError(f"Run {self.id} has {self.n_prompts} prompts; there is no prompt {prompt}.", "use an index from 0")
        offsets = self._group["offsets"]
        return int(offsets[prompt]), int(offsets[prompt + 1])

    def prompt(self, index: int) -> str:
        value = self._group["prompts"][index]
        return value.decode() if isinstance(value, bytes) else str(value)

    def prompts(self) -> list[str]:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in self._group["prompts"][:]]

    def tokens(self, prompt: int) -> np.ndarray:
        start, stop = self._span(prompt)
        return np.asarray(self._group["tokens"][start:stop])

    def str_tokens(self, prompt: int) -> list[str]:
        start, stop = self._span(prompt)
        return [v.decode() if isinstance(v, bytes) else str(v) for v in self._group["str_tokens"][start:stop]]

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        """Every prompt's token count (from the offsets the structure check verified)."""
        return np.diff(self._group["offsets"][:])

    def length(self, prompt: int) -> int:
        start, stop = self._span(prompt)
        return stop - start

    def dataset(self, hook: str) -> h5py.Dataset:
        name = self.resolve(hook)
        problem = self.activations_damage(name)
        if problem is not None:
            raise StoreError(f"Run {self.id} is damaged: {problem}.", "it was changed or damaged on disk; capture it again into another file")
        return self._group["acts"][name]

    def read(self, hook: str, prompt: int, index: Index = ()) -> np.ndarray:
        """Activations of one hook for one prompt, with padding cut away.

        index selects within the per-prompt axes before reading, e.g. (head,) for
        one head of an attention pattern; position axes it leaves open are cut to
        the prompt's length. Only the chunks covering the selection are read.
        """
        dataset = self.dataset(hook)
        length = self.length(prompt)
        if _attr(dataset.attrs.get("storage", "")) == STORAGE_RAGGED:
            return self._read_ragged(dataset, prompt, length, index)
        position_axes = set(int(a) for a in dataset.attrs.get("position_axes", [0]))
        if _attr(dataset.attrs.get("layout", LAYOUT_DENSE)) == LAYOUT_LOWER_TRIANGLE:
            # Leading (head) selections go to HDF5; position selections apply after unpacking.
            n_leading = dataset.ndim - 2
            chosen = list(index[:n_leading]) + [None] * (n_leading - len(index[:n_leading]))
            leading = tuple(slice(None) if i is None else i for i in chosen)
            packed = dataset[(prompt, *leading, slice(0, tril_size(length)))]
            full = unpack_lower_triangle(packed, length)
            rest = list(index[dataset.ndim - 2 :]) + [None, None]
            return full[(Ellipsis, *[slice(None) if i is None else i for i in rest[:2]])]
        selection: list[int | slice] = []
        for axis in range(dataset.ndim - 1):
            pick = index[axis] if axis < len(index) else None
            if pick is None:
                selection.append(slice(0, length) if axis in position_axes else slice(None))
            else:
                selection.append(pick)
        return np.asarray(dataset[(prompt, *selection)])

    def _ragged_layout(self, dataset: h5py.Dataset) -> tuple[RaggedShape, np.ndarray]:
        """The dataset's shape rule and where each prompt starts along its extent (cached)."""
        name = dataset.name
        if name not in self._starts:
            shape = _stored_shape(dataset)
            self._starts[name] = (shape, slot_starts(shape, self.lengths, self.slots))
        return self._starts[name]

    @functools.cached_property
    def slots(self) -> np.ndarray:
        """Where each prompt lies in a ragged run's write order (checked to be a permutation)."""
        return np.asarray(self._group["slots"][:])

    def _read_ragged(self, dataset: h5py.Dataset, prompt: int, length: int, index: Index) -> np.ndarray:
        shape, starts = self._ragged_layout(dataset)
        n_lead = len(shape.leading)
        chosen: list[int | slice] = [pick if i < len(index) and (pick := index[i]) is not None else slice(None) for i in range(n_lead)]
        slot = int(self.slots[prompt])
        span = slice(int(starts[slot]), int(starts[slot + 1]))
        block = dataset[(*chosen, span)]
        self._verify(dataset, prompt, chosen, block)
        kept = sum(1 for c in chosen if not isinstance(c, (int, np.integer)))
        values = shape.unflatten(block, length, kept)
        if _attr(dataset.attrs.get("layout", LAYOUT_DENSE)) == LAYOUT_LOWER_TRIANGLE:
            values = unpack_lower_triangle(values, length)
        rest = [slice(None) if i is None else i for i in index[n_lead:]]
        return values[(*[slice(None)] * kept, *rest)] if rest else values

    def _verify(self, dataset: h5py.Dataset, prompt: int, chosen: list[int | slice], block: np.ndarray) -> None:
        """Compare what was read with the checksums the writer kept: a flipped bit on disk is
        an error naming the run, hook and prompt, never a wrong heatmap."""
        checks = self._group["checksums"][dataset.name.rsplit("/", 1)[-1]]
        expected = np.asarray(checks[(*chosen, prompt)])
        kept_shape = block.shape[: expected.ndim]
        for position in np.ndindex(*kept_shape):
            got = checksum(block[position])
            if got != int(expected[position]):
                hook = dataset.name.rsplit("/", 1)[-1]
                raise StoreError(
                    f"Run {self.id}: the stored {hook} of prompt {prompt} does not match its checksum (the file was changed or damaged on disk).",
                    "capture it again into another file; the other data of this run is checked as it is read",
                )

    def pattern(self, layer: int, head: int, prompt: int) -> np.ndarray:
        """Attention pattern [query, key] of one head."""
        return self.read(f"blocks.{layer}.attn.hook_pattern", prompt, (head,))

    def find_prompt(self, tokens: Sequence[int] | np.ndarray) -> int | None:
        key = token_key(tokens).encode()
        keys = self._group["token_keys"][:]
        hits = np.nonzero(keys == key)[0]
        return int(hits[0]) if hits.size else None

    def summary(self) -> dict[str, Any]:
        attrs = self.attrs
        if self.full_damage is not None:
            return {"run": self.id, "status": STATUS_DAMAGED, "damage": self.full_damage, "model": attrs.get("model_spec"),
                    "fingerprint": attrs.get("model_fingerprint"), "created": attrs.get("created")}
        return {
            "run": self.id,
            "status": self.status,
            "model": attrs.get("model_spec"),
            "fingerprint": attrs.get("model_fingerprint"),
            "prompts": self.n_prompts,
            "tokens": int(self._group["tokens"].shape[0]),
            "hooks": len(self.hooks),
            "storage_dtype": attrs.get("storage_dtype"),
            "created": attrs.get("created"),
        }


_INDEX_DATASETS = ("prompts", "tokens", "offsets", "str_tokens", "token_keys")


def _stored_fully(dataset: h5py.Dataset) -> bool:
    """Whether the bytes the dataset declares are on disk (a crafted header can declare
    millions of rows in a few KB; reading them would allocate what was never stored)."""
    stored, size = int(dataset.id.get_storage_size()), int(dataset.size)
    if dataset.dtype.kind == "O":  # variable-length strings: 16-byte references each
        return stored >= 16 * size
    return stored >= size * int(dataset.dtype.itemsize)


def _structure_problem(group: h5py.Group) -> str | None:
    """What is wrong with a run's own structure (not yet its activations), or None."""
    linked = link_problem(group)
    if linked:
        return f"{linked}, which the workbench does not follow"
    for name in (*_INDEX_DATASETS, "acts"):
        if name not in group:
            return f"its {name!r} is missing"
    datasets = {name: group[name] for name in _INDEX_DATASETS}
    for name, dataset in datasets.items():
        if not isinstance(dataset, h5py.Dataset) or dataset.ndim != 1:
            return f"its {name!r} is not a one-dimensional dataset"
        if not _stored_fully(dataset):
            return f"its {name!r} declares {dataset.shape[0]} entries that are not stored"
    n_prompts = datasets["offsets"].shape[0] - 1
    n_tokens = datasets["tokens"].shape[0]
    if n_prompts < 1 or datasets["prompts"].shape[0] != n_prompts or datasets["token_keys"].shape[0] != n_prompts:
        return "its prompt count disagrees between prompts, offsets and token_keys"
    if datasets["str_tokens"].shape[0] != n_tokens:
        return "its str_tokens and tokens differ in length"
    if datasets["offsets"].dtype.kind not in "iu" or datasets["tokens"].dtype.kind not in "iu":
        return "its offsets or tokens are not integers"
    offsets = datasets["offsets"][:]
    lengths = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != n_tokens or (lengths < 1).any():
        return "its offsets do not split its tokens into prompts"
    if not isinstance(group["acts"], h5py.Group):
        return "its 'acts' is not a group"
    if "slots" in group:  # format 2: ragged activations in write order
        problem = _slots_problem(group, n_prompts)
        if problem:
            return problem
        if _attr(group.attrs.get("checksum_kind", "")) != CHECKSUM_KIND:
            return "its checksums are of a kind this workbench does not know"
    return None


def _activations_problem(group: h5py.Group, name: str, lengths: np.ndarray) -> str | None:
    """What is wrong with one hook's activations in a run whose structure holds, or None.
    Checked before the hook's first read, so nothing is read past what is stored."""
    dataset = group["acts"][name]
    if not isinstance(dataset, h5py.Dataset):
        return f"activations {name!r} are not a dataset"
    if dataset.dtype not in (np.float16, np.float32):
        return f"activations {name!r} are {dataset.dtype}, not float16 or float32"
    if _attr(dataset.attrs.get("storage", "")) == STORAGE_RAGGED:
        if "slots" not in group:
            return "its 'slots' are missing or the wrong size"
        problem = _ragged_problem(group["checksums"] if "checksums" in group else None, name, dataset, lengths)
    else:
        problem = _padded_problem(name, dataset, lengths)
    if problem is None and dataset.compression is None and dataset.chunks is not None and dataset.id.get_num_chunks() < _chunk_count(dataset):
        problem = f"activations {name!r} declare chunks that are not stored"
    return problem


def _padded_problem(name: str, dataset: h5py.Dataset, lengths: np.ndarray) -> str | None:
    """Format 1: one row per prompt, positions padded to the longest."""
    if dataset.ndim < 2 or dataset.shape[0] != len(lengths):
        return f"activations {name!r} do not hold one row per prompt"
    longest = int(lengths.max())
    layout = _attr(dataset.attrs.get("layout", LAYOUT_DENSE))
    axes = [int(a) for a in np.atleast_1d(dataset.attrs.get("position_axes", [0]))]
    if layout == LAYOUT_LOWER_TRIANGLE:
        if dataset.shape[-1] < tril_size(longest):
            return f"activations {name!r} are shorter than the longest prompt"
    elif any(not 0 <= axis < dataset.ndim - 1 or dataset.shape[axis + 1] < longest for axis in axes):
        return f"activations {name!r} are shorter than the longest prompt"
    return None


def _slots_problem(group: h5py.Group, n_prompts: int) -> str | None:
    slots = group.get("slots")
    if not isinstance(slots, h5py.Dataset) or slots.shape != (n_prompts,) or slots.dtype.kind not in "iu" or not _stored_fully(slots):
        return "its 'slots' are missing or the wrong size"
    if not np.array_equal(np.sort(slots[:]), np.arange(n_prompts)):
        return "its 'slots' are not an ordering of its prompts"
    return None


def _ragged_problem(checksums: h5py.Group | None, name: str, dataset: h5py.Dataset, lengths: np.ndarray) -> str | None:
    lead = _attr(dataset.attrs.get("leading_axes", -1))
    rule = _attr(dataset.attrs.get("extent_rule", ""))
    if not isinstance(lead, int) or not 0 <= lead < dataset.ndim or rule not in EXTENT_RULES:
        return f"activations {name!r} do not say how their prompts are laid out"
    shape = _stored_shape(dataset)
    if dataset.shape[lead] != int(shape.extents(lengths).sum()):
        return f"activations {name!r} do not hold exactly its prompts' positions"
    checks = checksums.get(name) if isinstance(checksums, h5py.Group) else None
    if not isinstance(checks, h5py.Dataset) or checks.shape != (*shape.leading, len(lengths)) or not _stored_fully(checks):
        return f"activations {name!r} have no checksums"
    return None


def _stored_shape(dataset: h5py.Dataset) -> RaggedShape:
    """How a ragged dataset lays out its prompts, from its own attributes (which
    _ragged_problem checks before any read)."""
    lead = int(_attr(dataset.attrs.get("leading_axes", 0)))
    return RaggedShape(tuple(dataset.shape[:lead]), tuple(dataset.shape[lead + 1 :]), str(_attr(dataset.attrs.get("extent_rule"))))


def _chunk_count(dataset: h5py.Dataset) -> int:
    return int(np.prod([-(-size // chunk) for size, chunk in zip(dataset.shape, dataset.chunks)]))


def read_runs(handle: h5py.File) -> list[StoredRun]:
    """Every run in an open store file, damaged ones included (their status says so)."""
    runs: list[StoredRun] = []
    for name in sorted(handle["runs"].keys()):
        try:
            runs.append(StoredRun(handle["runs"][name]))
        except (KeyError, OSError, RuntimeError) as exc:  # its header never fully reached the disk
            runs.append(StoredRun.unreadable(name, _failure(exc)))
    return runs


def refuse_if_damaged(path: str | Path) -> None:
    """Raise before a file that holds a damaged run is opened for writing.

    A damaged run's metadata points past the file's recorded end, which is where
    HDF5 puts new data; the run cannot even be unlinked (that needs its header).
    Appending could make it read as a whole run made of another run's bytes.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    handle = open_store_file(path, "r")
    try:
        damaged = [run.id for run in read_runs(handle) if run.damage is not None]
    finally:
        handle.close()
    if damaged:
        raise StoreError(
            f"{path} holds {', '.join(damaged)}, damaged when the process writing it was killed; "
            "new data written to this file could land on its space.",
            f"write to another file, or run 'workbench store compact {path}' to drop it; the other runs stay readable",
        )


@dataclass
class StoreHit:
    """Where a stored prompt lives: the run and the prompt's index in it."""

    run: StoredRun
    prompt: int


class ActivationStore:
    """A store file opened for reading. Use as a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = open_store_file(self.path, "r")

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def handle(self) -> h5py.File:
        """The open HDF5 file (read-only), e.g. for the results beside the runs."""
        return self._file

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def runs(self) -> list[StoredRun]:
        return read_runs(self._file)

    def run(self, run_id: str | None = None) -> StoredRun:
        """A run by id; without an id, the newest complete run."""
        if run_id is None:
            complete = [r for r in self.runs() if r.complete]
            if not complete:
                raise StoreError(f"{self.path} holds no complete run.", "create one with 'workbench cache'")
            return complete[-1]
        if run_id not in self._file["runs"]:
            raise StoreError(f"{self.path} has no run {run_id!r}.", f"its runs: {', '.join(r.id for r in self.runs()) or 'none'}")
        run = next(r for r in self.runs() if r.id == run_id)
        if run.damage is not None:
            raise StoreError(f"Run {run_id} in {self.path} is damaged ({run.damage}).", "its writer was killed; use another run")
        return run

    def find(self, fingerprint: str, tokens: Sequence[int] | np.ndarray, hooks: Iterable[str]) -> StoreHit | None:
        """A complete run of this model that holds these tokens and all these hooks, if any."""
        wanted = list(hooks)
        for run in reversed(self.runs()):
            if not run.complete or run.fingerprint != fingerprint:
                continue
            try:
                for hook in wanted:
                    run.resolve(hook)
            except StoreError:
                continue
            prompt = run.find_prompt(tokens)
            if prompt is not None:
                return StoreHit(run, prompt)
        return None
