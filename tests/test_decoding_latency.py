"""Latency harness: summaries, interleaving, device tags, per-utterance encoder/decoder/end-to-end rows."""

from __future__ import annotations

import pytest
import torch

from decoding.greedy import greedy_decode
from decoding.latency import TimingSummary, device_tags, interleaved_timings, measure_utterance


def test_summary_median_and_p90():
    summary = TimingSummary.from_seconds([0.001 * i for i in range(1, 11)])
    assert summary.median_ms == pytest.approx(5.5)
    assert summary.p90_ms == pytest.approx(9.0)
    assert summary.min_ms == pytest.approx(1.0) and summary.runs == 10
    with pytest.raises(ValueError):
        TimingSummary.from_seconds([])


def test_candidates_are_run_round_robin_after_warmup():
    calls: list[str] = []
    timings = interleaved_timings(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1
    )
    assert calls == ["a", "b"] * 4
    assert set(timings) == {"a", "b"} and all(t.runs == 3 for t in timings.values())
    with pytest.raises(ValueError, match="repeats"):
        interleaved_timings({"a": lambda: None}, repeats=0)


def test_device_tags_name_machine_and_threads():
    tags = device_tags(threads=2)
    assert tags["threads"] == 2 and tags["cpu_count"] >= 1 and tags["machine"] and tags["cpu"]


def test_measure_utterance_reports_consistent_row():
    layer = torch.nn.Linear(40, 18)
    features = torch.randn(1, 200, 40)

    def encode():
        return torch.log_softmax(layer(features), dim=-1), torch.tensor([200])

    previous_threads = torch.get_num_threads()
    try:
        latency = measure_utterance(encode, greedy_decode, audio_seconds=2.0, threads=1, repeats=3)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous_threads)
    row = latency.to_row()
    assert row["encoder_ms_median"] > 0 and row["decoder_ms_median"] > 0
    assert row["end_to_end_ms"] == pytest.approx(
        row["encoder_ms_median"] + row["decoder_ms_median"], abs=1e-3
    )
    assert row["real_time_factor"] == pytest.approx(row["end_to_end_ms"] / 2000, rel=1e-3)
