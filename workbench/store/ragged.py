"""Ragged storage: every prompt's activations end to end, no padding, each slice checksummed.

A hook's per-prompt array splits into leading axes (heads), the position axes, and
trailing axes (d_model). The position axes are flattened into one "extent" whose size
follows from the prompt's length by a rule (the length; its square for [q, k]; the packed
lower triangle; 1 where there are no positions), and the prompts are laid one after
another along it:

    acts/<hook>      [*leading, sum of extents, *trailing]
    checksums/<hook> [*leading, prompts] uint64: XXH3-64 of each prompt's slice per leading index

so a run of prompts of mixed lengths stores exactly its activations. Where a prompt
starts along the extent is the running sum of the extents before it, computed from the
run's token offsets. A head of one prompt stays one contiguous read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import xxhash

from .layout import LAYOUT_LOWER_TRIANGLE, tril_size

STORAGE_RAGGED = "ragged"
EXTENT_LENGTH, EXTENT_SQUARE, EXTENT_TRIANGLE, EXTENT_ONE = "length", "square", "triangle", "one"
EXTENT_RULES = (EXTENT_LENGTH, EXTENT_SQUARE, EXTENT_TRIANGLE, EXTENT_ONE)


@dataclass(frozen=True)
class RaggedShape:
    """How one hook's per-prompt array maps onto the ragged dataset."""

    leading: tuple[int, ...]
    trailing: tuple[int, ...]
    rule: str

    @classmethod
    def of(cls, sample_shape: tuple[int, ...], stored_axes: tuple[int, ...], layout: str) -> RaggedShape:
        axes = sorted(stored_axes)
        if axes and axes != list(range(axes[0], axes[-1] + 1)):
            raise ValueError(f"position axes {axes} are not adjacent")
        first = axes[0] if axes else len(sample_shape)
        last = axes[-1] + 1 if axes else len(sample_shape)
        rule: str | None
        if layout == LAYOUT_LOWER_TRIANGLE:
            rule = EXTENT_TRIANGLE
        else:
            rule = {0: EXTENT_ONE, 1: EXTENT_LENGTH, 2: EXTENT_SQUARE}.get(len(axes))
            if rule is None:
                raise ValueError(f"{len(axes)} position axes cannot be stored ragged")
        return cls(tuple(sample_shape[:first]), tuple(sample_shape[last:]), rule)

    def extent(self, length: int) -> int:
        return {EXTENT_LENGTH: length, EXTENT_SQUARE: length * length, EXTENT_TRIANGLE: tril_size(length), EXTENT_ONE: 1}[self.rule]

    def extents(self, lengths: np.ndarray) -> np.ndarray:
        counts: npt.NDArray[np.int64] = np.asarray(lengths, dtype=np.int64)
        if self.rule == EXTENT_LENGTH:
            return counts
        if self.rule == EXTENT_SQUARE:
            return counts * counts
        if self.rule == EXTENT_TRIANGLE:
            return counts * (counts + 1) // 2
        return np.ones_like(counts)

    def dataset_shape(self, total: int) -> tuple[int, ...]:
        return (*self.leading, total, *self.trailing)

    def flatten(self, sample: np.ndarray, length: int) -> np.ndarray:
        """One prompt's stored array (positions padded or not) -> [*leading, extent, *trailing]."""
        lead = len(self.leading)
        n_position_axes = sample.ndim - lead - len(self.trailing)
        if self.rule == EXTENT_TRIANGLE:  # [*heads, packed]: the packed axis is the last
            cut = sample[..., : tril_size(length)]
        else:
            index = [slice(None)] * sample.ndim
            for axis in range(lead, lead + n_position_axes):
                index[axis] = slice(0, length)
            cut = sample[tuple(index)]
        return cut.reshape(*self.leading, self.extent(length), *self.trailing)

    def unflatten(self, block: np.ndarray, length: int, kept_leading: int) -> np.ndarray:
        """[*kept leading, extent, *trailing] -> the prompt's array as the padded layout gave it
        (positions restored; patterns stay packed, as before)."""
        if self.rule == EXTENT_SQUARE:
            return block.reshape(*block.shape[:kept_leading], length, length, *block.shape[kept_leading + 1 :])
        if self.rule == EXTENT_ONE:
            return block.reshape(*block.shape[:kept_leading], *block.shape[kept_leading + 1 :])
        return block

    def checksums(self, block: np.ndarray) -> np.ndarray:
        """The checksum of one prompt's [*leading, extent, *trailing] block per leading index."""
        out = np.zeros(self.leading, dtype=np.uint64)
        for index in np.ndindex(*self.leading):
            out[index] = checksum(block[index])
        return out


# XXH3-64: a flipped bit changes it as surely as CRC-32 does, at about 9x the speed (12 vs
# 1.4 GB/s here), which keeps checksums under 5% of the writer's work.
CHECKSUM_KIND = "xxh3-64"


def checksum(values: np.ndarray) -> int:
    """XXH3-64 of an array's bytes in C order, without copying when it is contiguous."""
    contiguous = values if values.flags.c_contiguous else np.ascontiguousarray(values)
    return xxhash.xxh3_64_intdigest(contiguous.data)  # .data: a memoryview of the same bytes (the stub wants a Buffer)


def slot_starts(shape: RaggedShape, lengths: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """[slots + 1]: where the prompt in each slot starts along the extent (slots[prompt] is
    the prompt's place in write order); the prompt p spans starts[slots[p]]:starts[slots[p] + 1]."""
    in_slot_order = np.empty_like(lengths)
    in_slot_order[slots] = lengths
    return np.concatenate([[0], np.cumsum(shape.extents(in_slot_order))])


def chunk_shape(shape: RaggedShape, total: int, itemsize: int, target_bytes: int) -> tuple[int, ...]:
    """One leading index per chunk, never past the data; a row of chunks (one per leading
    index, the same stretch of the extent) takes about target_bytes."""
    row = itemsize * int(np.prod(shape.trailing, dtype=np.int64)) * int(np.prod(shape.leading, dtype=np.int64))
    along = max(1, min(total, target_bytes // max(1, row)))
    # Chunks of equal size that just cover the extent: the last one wastes next to nothing.
    n_chunks = -(-max(1, total) // along)
    along = -(-max(1, total) // n_chunks)
    return (*[1] * len(shape.leading), along, *shape.trailing)
