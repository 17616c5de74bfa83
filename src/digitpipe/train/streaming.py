"""Training on splits larger than memory: batches streamed from the split's Parquet file.

A split's row groups (at most 64 MB of pixels each, see ``dataset.parquet``) are its shards.
Each epoch visits the shards in an order drawn from the seed and the epoch; DDP ranks take
disjoint shards of that order; rows are shuffled within a window of WINDOW_SHARDS consecutive
shards. So an epoch's batches depend only on the seed, the epoch and the rank: reruns repeat
exactly, and a resumed run (from the last epoch's checkpoint) sees the batches an uninterrupted
one saw, with no reader state in the checkpoint.

Hand-written over pyarrow's ``read_row_group`` rather than litdata: litdata streams only its own
chunk format, a second copy of every split (7.8 GB for 10M 28x28 images), while the Parquet row
groups are already shards that can be read one at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from digitpipe.core.config import TrainParams
from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.images import ImageSet
from digitpipe.dataset.parquet import SplitLayout, read_group, read_split
from digitpipe.train.data import Batch, RankBatches, histogram_stats

GB = 1e9
# The default train.memory_budget_gb: this share of the machine's memory. Of its total, not of
# what is free now: free memory changes from run to run and between the processes of one node,
# which would switch a rerun, or a single rank, between streaming and holding the pixels.
BUDGET_SHARE = 0.5
# Rows are shuffled within this many consecutive shards: 256 MB of pixels with 64 MB row groups
# (at most three times that: the window training, the next one read ahead, and for a moment its
# concatenation). Fixed, not derived from the budget, so the order never depends on the machine.
WINDOW_SHARDS = 4


def memory_budget_gb(train: TrainParams) -> float:
    """train.memory_budget_gb, or BUDGET_SHARE of this machine's memory when it is null."""
    if train.memory_budget_gb is not None:
        return train.memory_budget_gb
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # Linux and macOS
    return round(BUDGET_SHARE * total / GB, 1)


class StreamedSplit:
    """A labelled split read from its Parquet file a row group at a time, never whole."""

    def __init__(self, layout: SplitLayout) -> None:
        self.layout = layout

    def __len__(self) -> int:
        return self.layout.rows

    @property
    def image_size(self) -> tuple[int, int]:
        return self.layout.height, self.layout.width

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.layout.class_names

    def read(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        """Shard ``shard``'s pixels (k, H, W) uint8 and labels, checked."""
        return read_group(self.layout, shard)

    def pixel_stats(self) -> tuple[float, float]:
        """Mean and standard deviation of the pixels (as ``data.pixel_stats``), in one pass that
        also checks every shard, before any training step."""
        shards = range(len(self.layout.group_rows))
        return histogram_stats(self.read(shard)[0] for shard in shards)

    def head(self, count: int) -> np.ndarray:
        """The first ``count`` images (an example for MLflow's model signature)."""
        return self.read(0)[0][:count]

    def to(self, device: torch.device) -> StreamedSplit:
        """Itself: each batch moves to the device on its own."""
        return self

    def batches(self, batch_size: int, **order) -> ShardBatches:
        return ShardBatches(self, batch_size, **order)


class ShardBatches(RankBatches):
    """An epoch's batches of a :class:`StreamedSplit` for one rank (see the module's docstring).

    Shuffled (training), every rank takes as many rows as the rank dealt the smallest shards
    has, so DDP ranks step in lockstep; the rows past that are left out of the epoch (a different
    few each epoch). In order (validation), a rank takes its shards whole.
    """

    def __init__(self, split: StreamedSplit, batch_size: int, **order) -> None:
        super().__init__(batch_size, **order)
        self.split, world_size = split, self.world_size
        sizes = split.layout.group_rows
        if len(sizes) < world_size:
            raise DigitpipeError(
                f"{split.layout.path} has {len(sizes)} row groups, fewer than the {world_size} "
                "training processes that would each stream some: raise train.memory_budget_gb "
                "to hold it in memory, or train with fewer devices."
            )
        if self.shuffle:
            self.rows_per_rank = self._without_a_lone_image(
                sum(sorted(sizes)[: len(sizes) // world_size])
            )
        else:
            self.rows_per_rank = sum(sizes[self.rank :: world_size])

    def shards(self) -> list[int]:
        """This rank's shards this epoch, in the order they are read."""
        count = len(self.split.layout.group_rows)
        if not self.shuffle:
            return list(range(count))[self.rank :: self.world_size]
        order = torch.randperm(count, generator=self._generator(rank=-1))  # one for every rank
        return order[self.rank :: self.world_size].tolist()

    def _generator(self, rank: int) -> torch.Generator:
        """A generator of this seed and epoch for ``rank``'s rows (-1: the shards' order)."""
        key = (self.seed * 1_000_003 + self.epoch_of()) * 4099 + rank + 1
        return torch.Generator().manual_seed(key)

    def __iter__(self) -> Iterator[Batch]:
        """Batches of the window's rows in a shuffled order (index_select: one batch is copied
        at a time); the rows short of a whole batch at a window's end open the next one."""
        rows = self._generator(self.rank)
        left = self.rows_per_rank
        rest_images = torch.zeros((0, 1, *self.split.image_size), dtype=torch.uint8)
        rest_labels = torch.zeros(0, dtype=torch.int64)
        for images, labels in self._windows():
            count = len(labels)
            order = torch.randperm(count, generator=rows) if self.shuffle else torch.arange(count)
            start = 0
            while left > 0 and count - start + len(rest_labels) >= min(self.batch_size, left):
                take = order[start : start + min(self.batch_size, left) - len(rest_labels)]
                batch = images.index_select(0, take), labels.index_select(0, take)
                if len(rest_labels):  # a window's first batch: the last one's rows first
                    batch = torch.cat([rest_images, batch[0]]), torch.cat([rest_labels, batch[1]])
                yield batch
                start, left = start + len(take), left - len(take) - len(rest_labels)
                rest_images, rest_labels = rest_images[:0], rest_labels[:0]
            if left == 0:
                return
            tail = order[start:]
            rest_images = torch.cat([rest_images, images.index_select(0, tail)])
            rest_labels = torch.cat([rest_labels, labels.index_select(0, tail)])
        if left > 0 and len(rest_labels):  # the last, partial batch
            yield rest_images[:left], rest_labels[:left]

    def _windows(self) -> Iterator[Batch]:
        """The rank's shards, WINDOW_SHARDS at a time, as (k, 1, H, W) uint8 and labels. The next
        window's shards are read in a thread while the current window trains (pyarrow releases
        the GIL): reading only its first shard ahead left the training waiting for the other
        three."""
        shards = self.shards()
        windows = [shards[k : k + WINDOW_SHARDS] for k in range(0, len(shards), WINDOW_SHARDS)]
        reader = ThreadPoolExecutor(max_workers=1)
        try:
            pending = []
            for following in [*windows, []]:
                parts = [read.result() for read in pending]
                pending = [reader.submit(self.split.read, shard) for shard in following]
                if not parts:  # the first window: being read
                    continue
                images = np.concatenate([part[0] for part in parts])
                labels = np.concatenate([part[1] for part in parts])
                del parts  # the window is held once
                yield torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)
        finally:  # an epoch cut short (train.limit_batches) waits for no read ahead
            reader.shutdown(cancel_futures=True)


def held_or_streamed(
    layouts: list[SplitLayout], budget_gb: float, processes: int
) -> tuple[list[ImageSet | StreamedSplit], str]:
    """The splits (training first), each held in memory while the pixels held, times this node's
    ``processes`` (each holds its own copy), stay within ``budget_gb``, else streamed; and, in
    words, which (for the stage's first line)."""
    splits: list[ImageSet | StreamedSplit] = []
    held = 0
    for layout in layouts:
        if (held + layout.pixel_bytes) * processes <= budget_gb * GB:
            splits.append(read_split(layout.path, ids=False))
            held += layout.pixel_bytes
        else:
            splits.append(StreamedSplit(layout))
    streamed = [split for split in splits if isinstance(split, StreamedSplit)]
    if not streamed:
        return splits, f"in memory ({held / GB:.2f} GB of pixels, budget {budget_gb:g} GB)"
    pixels = sum(split.layout.pixel_bytes for split in streamed)
    names = " and ".join(split.layout.path.name for split in streamed)
    return splits, (
        f"streaming {names} from disk ({pixels / GB:.2f} GB of pixels over the budget of "
        f"{budget_gb:g} GB, {sum(len(s.layout.group_rows) for s in streamed)} shards)"
    )
