"""Length-bucketed dynamic batches: utterances of similar duration together, batches capped in seconds.

Padding an LSTM batch to its longest utterance wastes the time of every shorter one, and fixed batch sizes
either waste memory on short utterances or overflow it on long ones. Under DDP each rank takes every
world_size-th batch. Training ranks all get the same number of batches (a rank that would run short
repeats batches), since every training step all-reduces gradients and a rank that stopped early would
leave the others waiting forever. Validation only reduces its counts once, at the end of the epoch, so
there ranks split the batches without repeats (``even_ranks=False``) and every utterance is scored once:
the validation WER is the corpus WER, not one with some utterances counted twice (unless there are
fewer batches than ranks: then every rank still gets one, and some repeat).

``sorted_epochs`` is SortaGrad (Amodei et al., Deep Speech 2, 2016): the first epochs take their batches
shortest first. A CTC model starts on a plateau where it emits only blanks, and how long it stays there
varies with the seed (3 to 9 of the digits recipe's 22 epochs); short utterances have few alignments to
choose between, so they are the easiest way off it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import Sampler


class BucketBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        durations: Sequence[float],
        max_batch_seconds: float,
        max_batch_size: int = 128,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        even_ranks: bool = True,
        sorted_epochs: int = 0,
        epoch_source: Callable[[], int] | None = None,
    ) -> None:
        if max_batch_seconds <= 0 or max_batch_size < 1:
            raise ValueError("max_batch_seconds and max_batch_size must be positive")
        if sorted_epochs < 0:
            raise ValueError("sorted_epochs must be 0 or more")
        self.durations = list(durations)
        self.max_batch_seconds = max_batch_seconds
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.even_ranks = even_ranks
        self.sorted_epochs = sorted_epochs
        self.epoch_source = epoch_source
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Every epoch (and every rank alike) draws a new order; ``epoch_source``, when given, wins."""
        self.epoch = epoch

    def _epoch(self) -> int:
        """The epoch whose order to draw: ``epoch_source()`` (the data module's count) or ``set_epoch``'s.

        Lightning calls ``set_epoch`` on a loader's ``sampler`` and ``batch_sampler.sampler``, never on the
        batch sampler itself (Lightning-AI/pytorch-lightning#13316, narrowed again by #16826), and a fit
        draws its first epoch's batches before any hook runs, a resumed fit's before its loops are restored;
        so the data module passes its own count, read when the batches are drawn, instead of waiting to be
        told.
        """
        return self.epoch_source() if self.epoch_source is not None else self.epoch

    def _batches(self) -> list[list[int]]:
        epoch = self._epoch()
        generator = torch.Generator().manual_seed(self.seed + epoch)
        # sort by duration with a little jitter so that bucket membership changes between epochs
        jitter = torch.rand(len(self.durations), generator=generator) * 0.1 if self.shuffle else None
        keys = torch.tensor(self.durations) + (jitter if jitter is not None else 0)
        order = torch.argsort(keys).tolist()
        batches, current, longest = [], [], 0.0
        for index in order:
            duration = self.durations[index]
            grown = max(longest, duration) * (len(current) + 1)
            if current and (grown > self.max_batch_seconds or len(current) >= self.max_batch_size):
                batches.append(current)
                current, longest = [], 0.0
            current.append(index)
            longest = max(longest, duration)
        if current:
            batches.append(current)
        if self.shuffle and epoch >= self.sorted_epochs:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return batches

    def _rank_batches(self) -> list[list[int]]:
        batches = self._batches()
        # every rank must reach validation's epoch-end reduce, so a rank never goes without a batch
        if self.even_ranks or len(batches) < self.num_replicas:
            per_rank = math.ceil(len(batches) / self.num_replicas)
            batches = (batches * math.ceil(per_rank * self.num_replicas / len(batches)))[
                : per_rank * self.num_replicas
            ]
        return batches[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._rank_batches())

    def __len__(self) -> int:
        return len(self._rank_batches())
