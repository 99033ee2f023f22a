"""The timing harness: one p90 definition, interleaved rounds, per-item medians, device tags."""

from __future__ import annotations

import pytest
import torch

from common.measure import TimingSummary, device_tags, interleaved, percentile, timed


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 90) == 9.0
    assert percentile(values, 50) == 5.0
    assert percentile(values, 100) == 10.0 and percentile(values, 0) == 1.0
    assert percentile([3.0], 90) == 3.0
    assert percentile([5.0, 1.0, 4.0, 2.0, 3.0], 90) == 5.0  # order of the input does not matter
    with pytest.raises(ValueError):
        percentile([], 90)
    with pytest.raises(ValueError):
        percentile([1.0], 120)


def test_summary_median_and_p90():
    summary = TimingSummary.from_seconds([0.001 * i for i in range(1, 11)])
    assert summary.median_ms == pytest.approx(5.5)
    assert summary.p90_ms == pytest.approx(9.0)
    assert summary.min_ms == pytest.approx(1.0) and summary.runs == 10
    with pytest.raises(ValueError):
        TimingSummary.from_seconds([])


def test_candidates_are_interleaved_with_a_rotating_order_after_warmup():
    calls: list[str] = []
    timings = interleaved(
        {"a": timed(lambda: calls.append("a")), "b": timed(lambda: calls.append("b"))}, repeats=3, warmup=1
    )
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]  # who runs first after a switch alternates
    assert set(timings) == {"a", "b"} and all(t.items[0].runs == 3 for t in timings.values())
    with pytest.raises(ValueError, match="repeats"):
        interleaved({"a": timed(lambda: None)}, repeats=0)


def test_steps_are_interleaved_one_by_one_and_keep_their_items():
    calls: list[str] = []

    def step(name: str, index: int, seconds: float):
        def run() -> list[float]:
            calls.append(f"{name}{index}")
            return [seconds]

        return run

    timings = interleaved(
        {name: [step(name, i, 0.001 * (i + 1)) for i in range(2)] for name in "abc"}, repeats=1, warmup=0
    )
    assert calls == ["a0", "b0", "c0", "b1", "c1", "a1"]
    assert all(t.median_ms == pytest.approx([1.0, 2.0]) for t in timings.values())
    with pytest.raises(ValueError, match="steps"):
        interleaved({"a": [step("a", 0, 0.0)], "b": [step("b", 0, 0.0)] * 2}, repeats=1)


def test_per_item_medians_and_their_mean():
    rounds = iter([[0.001, 0.010], [0.003, 0.030], [0.002, 0.020]])
    timings = interleaved({"a": lambda: next(rounds)}, repeats=3, warmup=0)["a"]
    assert timings.median_ms == pytest.approx([2.0, 20.0])
    assert timings.mean_ms == pytest.approx(11.0)
    assert timings.p90_ms == pytest.approx(20.0)


def test_rounds_must_return_the_same_items():
    rounds = iter([[0.001, 0.002], [0.001]])
    with pytest.raises(ValueError, match="items"):
        interleaved({"a": lambda: next(rounds)}, repeats=2, warmup=0)


def test_threads_are_set_and_recorded():
    previous = torch.get_num_threads()
    try:
        timings = interleaved({"a": timed(lambda: None)}, repeats=1, threads=1)
        assert torch.get_num_threads() == 1 and timings["a"].threads == 1
    finally:
        torch.set_num_threads(previous)


def test_device_tags_name_machine_and_threads():
    tags = device_tags(threads=2)
    assert tags["threads"] == 2 and tags["cpu_count"] >= 1 and tags["machine"] and tags["cpu"]
