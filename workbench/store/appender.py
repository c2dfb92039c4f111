"""Writes one ragged dataset front to back in whole chunks.

Prompts arrive in batches whose extent is a fraction of a chunk. Written as they come,
every batch would rewrite parts of chunks HDF5 already holds on disk (it reads the chunk,
patches it, writes it back), once per batch and per head. The appender keeps the chunk
being filled in memory and hands HDF5 each chunk once, whole: with no filter, straight to
its place in the file (H5Dwrite_chunk), which skips HDF5's selection and copying.

Memory: one chunk per leading index (one row of chunks) per dataset, until the run ends.
"""

from __future__ import annotations

import h5py
import numpy as np


class ChunkAppender:
    def __init__(self, dataset: h5py.Dataset, leading: int, direct: bool):
        self.dataset = dataset
        self.lead = leading  # the extent is axis `leading` of the dataset
        self.along = dataset.chunks[leading]
        self.total = dataset.shape[leading]
        self.direct = direct
        shape = list(dataset.shape)
        shape[leading] = self.along
        self.buffer = np.empty(shape, dtype=dataset.dtype)
        self.start = 0  # where along the extent buffer[..., 0, ...] belongs
        self.filled = 0

    def _index(self, begin: int, end: int) -> tuple[slice, ...]:
        return (*(slice(None),) * self.lead, slice(begin, end))

    def write(self, begin: int, block: np.ndarray) -> None:
        """Place block ([*leading, n, *trailing]) at extent begin."""
        if begin != self.start + self.filled:  # out of order: what is held goes first
            self.drain()
            self.start = begin
        n = block.shape[self.lead]
        done = 0
        while done < n:
            take = min(self.along - self.filled, n - done)
            self.buffer[self._index(self.filled, self.filled + take)] = block[self._index(done, done + take)]
            self.filled += take
            done += take
            if self.filled == self.along:
                self.drain()

    def drain(self) -> None:
        """Write what the buffer holds (a whole chunk, or the part of one filled so far)."""
        if self.filled == 0:
            return
        begin, end = self.start, self.start + self.filled
        aligned = begin % self.along == 0 and (self.filled == self.along or end == self.total)
        if self.direct and aligned:
            self._write_chunks(begin)
        else:
            self.dataset[self._index(begin, end)] = self.buffer[self._index(0, self.filled)]
        self.start, self.filled = end, 0

    def _write_chunks(self, begin: int) -> None:
        # Bytes past the dataset's end in its last chunk are never read; they go as they are.
        lead_shape = self.buffer.shape[: self.lead]
        for index in np.ndindex(*lead_shape):
            offset = (*index, begin, *(0,) * (self.buffer.ndim - self.lead - 1))
            self.dataset.id.write_direct_chunk(offset, np.ascontiguousarray(self.buffer[index]))
