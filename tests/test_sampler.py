"""Length-bucketed batches: every utterance once per epoch, capped batches, disjoint equal DDP shards."""

from __future__ import annotations

import random

from asr.data.sampler import BucketBatchSampler

DURATIONS = [random.Random(i).uniform(0.5, 8.0) for i in range(300)]


def test_every_utterance_once_and_batches_capped():
    sampler = BucketBatchSampler(DURATIONS, max_batch_seconds=30.0, max_batch_size=16)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(300))
    for batch in batches:
        assert len(batch) <= 16
        assert len(batch) == 1 or max(DURATIONS[i] for i in batch) * len(batch) <= 30.0
    assert len(sampler) == len(batches)


def test_batches_group_similar_lengths():
    batches = list(BucketBatchSampler(DURATIONS, max_batch_seconds=40.0, shuffle=False))
    spreads = [max(DURATIONS[i] for i in b) - min(DURATIONS[i] for i in b) for b in batches if len(b) > 1]
    assert max(spreads) < 1.0


def test_epochs_differ_and_repeat_with_the_seed():
    sampler = BucketBatchSampler(DURATIONS, max_batch_seconds=30.0, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first and second != first


def test_sorted_epochs_go_shortest_first_then_shuffle():
    """SortaGrad: ascending batch lengths in the first epochs on every rank, the usual shuffle after."""

    def longest(batches: list[list[int]]) -> list[float]:
        return [max(DURATIONS[i] for i in batch) for batch in batches]

    for rank in range(2):
        sampler = BucketBatchSampler(DURATIONS, 30.0, seed=3, num_replicas=2, rank=rank, sorted_epochs=2)
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            assert longest(list(sampler)) == sorted(longest(list(sampler)))
        sampler.set_epoch(2)
        shuffled = BucketBatchSampler(DURATIONS, 30.0, seed=3, num_replicas=2, rank=rank)
        shuffled.set_epoch(2)
        assert list(sampler) == list(shuffled) and longest(list(sampler)) != sorted(longest(list(sampler)))


def test_ranks_get_disjoint_batches_of_equal_count():
    shards = [list(BucketBatchSampler(DURATIONS, 30.0, num_replicas=3, rank=r, seed=1)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    seen = [tuple(b) for s in shards for b in s]
    covered = {i for b in seen for i in b}
    assert covered == set(range(300))


def test_validation_ranks_score_every_utterance_exactly_once():
    """``even_ranks=False`` (validation): no padding, so some ranks get a batch fewer, but the shards
    together hold each utterance once; the training sampler would repeat some to even the counts."""
    make = [BucketBatchSampler(DURATIONS, 30.0, num_replicas=5, rank=r, even_ranks=False) for r in range(5)]
    shards = [list(sampler) for sampler in make]
    assert sorted(i for s in shards for b in s for i in b) == list(range(300))
    assert [len(s) for s in shards] == [len(sampler) for sampler in make]
    assert len({len(s) for s in shards}) == 2  # 48 batches over 5 ranks: uneven, the case that matters
    padded = [list(BucketBatchSampler(DURATIONS, 30.0, num_replicas=5, rank=r)) for r in range(5)]
    assert sum(len(b) for s in padded for b in s) > 300  # the control: training pads with repeats
    few = [
        list(BucketBatchSampler(DURATIONS[:2], 30.0, num_replicas=3, rank=r, even_ranks=False))
        for r in range(3)
    ]
    assert all(len(s) == 1 for s in few)  # fewer batches than ranks: no rank may skip the epoch-end reduce
