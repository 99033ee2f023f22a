"""Latency measurement that holds up on a shared, noisy CPU: explicit threads, warm-up, repeats, medians.

Single timings of a decoder vary up to 2x between runs on a busy machine, so every quantity here is the
median (and p90) of repeated runs, and candidates compared side by side are run *interleaved* (A, B, A,
B, ...) so that drift in machine load hits all of them alike. Rows are tagged with the device and thread
count, because a latency without them cannot be compared with anything.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class TimingSummary:
    """Repeated wall-clock timings of one operation, in milliseconds."""

    median_ms: float
    p90_ms: float
    min_ms: float
    runs: int

    @classmethod
    def from_seconds(cls, seconds: list[float]) -> TimingSummary:
        if not seconds:
            raise ValueError("no timings to summarize")
        ordered = sorted(s * 1000 for s in seconds)
        return cls(
            median_ms=statistics.median(ordered),
            p90_ms=ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))],
            min_ms=ordered[0],
            runs=len(ordered),
        )

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def interleaved_timings(
    candidates: Mapping[str, Callable[[], object]], repeats: int = 5, warmup: int = 1
) -> dict[str, TimingSummary]:
    """Time each candidate ``repeats`` times, round-robin, after ``warmup`` untimed rounds."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        for run in candidates.values():
            run()
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    return {name: TimingSummary.from_seconds(values) for name, values in seconds.items()}


def cpu_model() -> str:
    """The processor's marketing name (x86 'model name', Arm 'Model'/'Hardware'), else platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_tags(threads: int) -> dict[str, str | int]:
    """What a latency row must carry to be comparable: machine, CPU, cores, threads, torch version."""
    return {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "threads": threads,
        "torch": torch.__version__.split("+")[0],
    }


@dataclass(frozen=True)
class UtteranceLatency:
    """Encoder, decoder and end-to-end latency of one utterance (medians over repeats) and its RTF."""

    audio_seconds: float
    encoder: TimingSummary
    decoder: TimingSummary

    @property
    def end_to_end_ms(self) -> float:
        return self.encoder.median_ms + self.decoder.median_ms

    @property
    def real_time_factor(self) -> float:
        return self.end_to_end_ms / 1000 / self.audio_seconds

    def to_row(self) -> dict[str, float]:
        return {
            "audio_seconds": round(self.audio_seconds, 4),
            "encoder_ms_median": round(self.encoder.median_ms, 4),
            "encoder_ms_p90": round(self.encoder.p90_ms, 4),
            "decoder_ms_median": round(self.decoder.median_ms, 4),
            "decoder_ms_p90": round(self.decoder.p90_ms, 4),
            "end_to_end_ms": round(self.end_to_end_ms, 4),
            "real_time_factor": float(f"{self.real_time_factor:.4g}"),  # small RTFs keep their digits
        }


def measure_utterance(
    encode: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    decode: Callable[[torch.Tensor, torch.Tensor], object],
    audio_seconds: float,
    threads: int,
    repeats: int = 5,
    warmup: int = 1,
) -> UtteranceLatency:
    """Time ``encode`` (waveform -> log-probs) and ``decode`` (log-probs -> text) of one utterance.

    The encoder runs under ``torch.inference_mode`` with ``threads`` intra-op threads; the decoder is timed
    on the encoder's own output, interleaved with the encoder runs.
    """
    torch.set_num_threads(threads)
    with torch.inference_mode():
        log_probs, lengths = encode()
        timings = interleaved_timings(
            {"encoder": encode, "decoder": lambda: decode(log_probs, lengths)}, repeats=repeats, warmup=warmup
        )
    return UtteranceLatency(audio_seconds, timings["encoder"], timings["decoder"])
