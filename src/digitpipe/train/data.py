"""Fast in-memory data: uint8 images in one tensor, served as whole batches by index.

No per-item ``__getitem__`` and no collate: a batch is one ``index_select``. Conversion to float
and augmentation happen per batch on the target device (see ``augment``). A split too large for
memory is streamed instead (``train.streaming``); :class:`DigitData` serves either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from typing import Protocol

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from digitpipe.core.config import Augment, Recipe
from digitpipe.dataset.images import ImageSet

Batch = tuple[torch.Tensor, torch.Tensor]


STATS_PIXELS = 2**20  # pixels per chunk of the statistics: an 8 MB int64 temporary at the most


def as_tensors(images: ImageSet) -> Batch:
    """(N, 1, H, W) uint8 images and int64 labels, sharing the split's memory (copied only when
    the array is read-only or not contiguous): the pixels are held once."""
    pixels = np.require(images.images, np.uint8, ["C", "W"])
    return torch.from_numpy(pixels).unsqueeze(1), torch.from_numpy(images.labels)


def pixel_stats(images: ImageSet) -> tuple[float, float]:
    """Mean and standard deviation (unbiased) of the training pixels scaled to 0..1, rounded to
    float32 as the float32 tensor's mean and std gave them (see :func:`histogram_stats`)."""
    return histogram_stats([images.images])


def histogram_stats(chunks: Iterable[np.ndarray]) -> tuple[float, float]:
    """Mean and standard deviation (unbiased) of the uint8 pixels of ``chunks`` scaled to 0..1.

    Exact: from a histogram of the 256 pixel values, counted STATS_PIXELS at a time, so no float
    copy of the split is made (a float32 copy was 4x the pixel bytes: 2.7 GB for 1M 28x28
    images)."""
    counts = np.zeros(256, np.int64)
    for chunk in chunks:
        flat = chunk.reshape(-1)
        for start in range(0, len(flat), STATS_PIXELS):
            counts += np.bincount(flat[start : start + STATS_PIXELS], minlength=256)
    values = np.arange(256, dtype=np.int64)
    n, total, squares = int(counts.sum()), int(counts @ values), int(counts @ values**2)
    mean = Fraction(total, n * 255)
    variance = Fraction(n * squares - total * total, n * (n - 1) * 255 * 255)
    return float(np.float32(float(mean))), float(np.float32(math.sqrt(variance)))


class RankBatches:
    """One rank's batches of an epoch: their size, and the order's inputs. The order depends
    only on ``seed``, the epoch (from ``epoch_of``) and the rank, so runs repeat exactly and a
    resumed run sees the same batches it would have seen. Subclasses set ``rows_per_rank``."""

    rows_per_rank: int

    def __init__(
        self,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        epoch_of: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch_of, self.rank, self.world_size = epoch_of, rank, world_size

    def _without_a_lone_image(self, rows: int) -> int:
        """``rows``, one fewer when shuffled batches would end with a batch of one image: batch
        norm cannot normalise it."""
        return rows - 1 if self.shuffle and rows % self.batch_size == 1 else rows

    def __len__(self) -> int:
        return math.ceil(self.rows_per_rank / self.batch_size)


class IndexBatches(RankBatches):
    """Whole batches of in-memory tensors, reshuffled each epoch, sharded per rank."""

    def __init__(self, tensors: Batch, batch_size: int, **order) -> None:
        super().__init__(batch_size, **order)
        self.images, self.labels = tensors
        # Every rank gets the same number of rows, so DDP ranks step in lockstep.
        count, ranks = len(self.labels), self.world_size
        self.rows_per_rank = self._without_a_lone_image(
            count // ranks if self.shuffle else math.ceil(count / ranks)
        )

    def _order(self) -> torch.Tensor:
        count = len(self.labels)
        if not self.shuffle:
            return torch.arange(count)[self.rank :: self.world_size]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch_of())
        order = torch.randperm(count, generator=generator)
        return order[self.rank :: self.world_size][: self.rows_per_rank]

    def __iter__(self) -> Iterator[Batch]:
        order = self._order().to(self.images.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.images.index_select(0, index), self.labels.index_select(0, index)


class InMemorySplit:
    """A split's tensors (see :func:`as_tensors`), served by :class:`IndexBatches`."""

    def __init__(self, tensors: Batch) -> None:
        self.tensors = tensors

    def to(self, device: torch.device) -> InMemorySplit:
        """The tensors on ``device`` (the same object when already there)."""
        if device.type == "cpu":
            return self
        return InMemorySplit(tuple(t.to(device) for t in self.tensors))

    def batches(self, batch_size: int, **order) -> IndexBatches:
        return IndexBatches(self.tensors, batch_size, **order)


class Split(Protocol):
    """What :class:`DigitData` needs of a split: its batches, and a copy on the device."""

    def to(self, device: torch.device) -> Split: ...

    def batches(self, batch_size: int, **order) -> Iterable[Batch]: ...


def held(split: ImageSet | Split) -> Split:
    """An ImageSet as the tensors held in memory; any other split as it is."""
    return InMemorySplit(as_tensors(split)) if isinstance(split, ImageSet) else split


class DigitData(L.LightningDataModule):
    """Train and validation splits held in memory (on the GPU when training there), or streamed
    from disk: an ImageSet is held, a ``StreamedSplit`` streamed."""

    def __init__(
        self,
        train: ImageSet | Split,
        val: ImageSet | Split,
        batch_size: int,
        seed: int,
        augmentation: Augment,
        augmented_epochs: int,
    ) -> None:
        super().__init__()
        self.train, self.val = held(train), held(val)
        self.batch_size, self.seed = batch_size, seed
        self.augmentation, self.augmented_epochs = augmentation, augmented_epochs

    @classmethod
    def for_recipe(
        cls, train: ImageSet | Split, val: ImageSet | Split, recipe: Recipe, seed: int
    ) -> DigitData:
        """The data as ``recipe`` trains on it: its batch, augmentation and clean last epochs."""
        augmented_epochs = recipe.max_epochs - recipe.clean_epochs
        return cls(train, val, recipe.batch_size, seed, recipe.augment, augmented_epochs)

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device
        self.train, self.val = self.train.to(device), self.val.to(device)

    def _batches(self, split: Split, shuffle: bool) -> Iterable[Batch]:
        world = self.trainer.world_size
        return split.batches(
            self.batch_size // world,
            shuffle=shuffle,
            seed=self.seed,
            epoch_of=lambda: self.trainer.current_epoch,
            rank=self.trainer.global_rank,
            world_size=world,
        )

    def train_dataloader(self) -> Iterable[Batch]:
        return self._batches(self.train, shuffle=True)

    def val_dataloader(self) -> Iterable[Batch]:
        return self._batches(self.val, shuffle=False)

    def transfer_batch_to_device(
        self, batch: Batch, device: torch.device, dataloader_idx: int
    ) -> Batch:
        """Two tensors, moved directly (no-op when they already live there)."""
        images, labels = batch
        return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """uint8 -> float on the device, channels-last; augmented only while training, in its
        first ``augmented_epochs`` epochs."""
        images, labels = batch
        images = images.float()
        augmenting = self.trainer.training and self.trainer.current_epoch < self.augmented_epochs
        if augmenting and self.augmentation != Augment():
            images = augment(images, self.augmentation)
        return images.contiguous(memory_format=torch.channels_last), labels


def augment(
    images: torch.Tensor, settings: Augment, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random rotation, translation, scaling and elastic distortion of a float batch (N, C, H, W),
    per image."""
    count, device = images.shape[0], images.device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=device) * 2 - 1

    angle = uniform(count) * math.radians(settings.rotation)
    scale = 1 + uniform(count) * settings.scale
    shift = uniform(count, 2) * (2 * settings.translation)  # grid units: the image spans 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, shift[:, 0]], dim=1),
            torch.stack([sin, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    if settings.elastic:
        grid = grid + _smooth_displacement(images.shape, settings.elastic, generator, device)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")


def _smooth_displacement(
    shape: torch.Size, pixels: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Elastic distortion (Simard et al., 2003): a smooth random displacement field in grid units,
    ``pixels`` standard deviation, made by upsampling a random 4x4 field bicubically."""
    count, _, height, width = shape
    coarse = torch.randn(count, 2, 4, 4, generator=generator, device=device) * pixels
    field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    to_grid = torch.tensor([2 / width, 2 / height], device=device)  # the image spans 2
    return field.permute(0, 2, 3, 1) * to_grid
