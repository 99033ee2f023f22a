"""The one timing harness: explicit threads, warm-up, interleaved repeats, per-item medians, one p90.

Single timings vary up to 2x between runs on a busy machine, so every latency here is the median of
repeated runs, and candidates compared side by side are run *interleaved* so that drift in machine load
hits all of them alike. A candidate is one round, or a sequence of *steps* (one per utterance, say): the
candidates are interleaved step by step (utterance 1 of A, B, C, then utterance 2 of B, C, A, ...), with the
order rotated every step so that no candidate always runs first after a switch. Interleaving whole rounds
(all of A's utterances, then all of B's) left the copy of a model 3-7% off the original on this machine;
step by step it stays within 1%. A step measures one or more *items* (an utterance, or the parts of a
forward pass) and returns their seconds; each item's median over repeats is its latency, and the mean of
those medians is the candidate's. Results carry the device and thread count, because a latency without
them cannot be compared with anything.

Everything that times something (transcribe, evaluate, the study, the search, the benchmarks) goes
through :func:`interleaved`.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

Round = Callable[[], Sequence[float]]
"""One timed step of a candidate: runs part of it (or all of it) once and returns each item's seconds."""

Candidate = Round | Sequence[Round]
"""What :func:`interleaved` times: one round, or the steps of a round, interleaved with other candidates'."""


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]): the smallest value with at least q% of values at or below.

    One definition for every p90 the project reports, so that p90s from different tools compare.
    """
    if not values:
        raise ValueError("no values to take a percentile of")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must lie in [0, 100], got {q}")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class TimingSummary:
    """Repeated wall-clock timings of one item, in milliseconds."""

    median_ms: float
    p90_ms: float
    min_ms: float
    runs: int

    @classmethod
    def from_seconds(cls, seconds: Sequence[float]) -> TimingSummary:
        if not seconds:
            raise ValueError("no timings to summarize")
        ms = [s * 1000 for s in seconds]
        return cls(statistics.median(ms), percentile(ms, 90), min(ms), len(ms))

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class Measurement:
    """One candidate's timings: a :class:`TimingSummary` per item, and where they were taken."""

    items: tuple[TimingSummary, ...]
    threads: int | None

    @property
    def mean_ms(self) -> float:
        """Mean over items of each item's median: the candidate's latency per item."""
        return statistics.fmean(item.median_ms for item in self.items)

    @property
    def median_ms(self) -> list[float]:
        """Each item's median in ms, in item order."""
        return [item.median_ms for item in self.items]

    @property
    def p90_ms(self) -> float:
        """p90 over items of the per-item medians (how slow the slow utterances are)."""
        return percentile(self.median_ms, 90)


def timed(run: Callable[[], object]) -> Round:
    """A round that times one whole call of ``run`` as a single item."""

    def round_() -> list[float]:
        started = time.perf_counter()
        run()
        return [time.perf_counter() - started]

    return round_


def interleaved(
    candidates: Mapping[str, Candidate], repeats: int = 3, warmup: int = 1, threads: int | None = None
) -> dict[str, Measurement]:
    """Run every candidate ``warmup`` times untimed, then ``repeats`` times, interleaved step by step.

    A candidate given as a sequence of steps has its items in step order; all such candidates must have
    the same number of steps. ``threads`` sets torch's intra-op threads first (None: leave as is,
    recorded as the current count). Every repeat of a candidate must return the same number of items.

    torch is never imported here: the device runtime times onnxruntime sessions (which carry their own
    thread count) on boards without torch; when the candidates use torch, it is already loaded.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    torch = sys.modules.get("torch")
    if threads is not None and torch is not None:
        torch.set_num_threads(threads)
    recorded = threads if threads is not None or torch is None else torch.get_num_threads()
    steps = {name: [c] if callable(c) else list(c) for name, c in candidates.items()}
    counts = {len(s) for s in steps.values()}
    if len(counts) > 1 or 0 in counts:
        raise ValueError(f"candidates have {sorted(counts)} steps; interleaving needs the same number (>= 1)")
    names = list(steps)
    step_count = counts.pop() if counts else 0
    samples: dict[str, list[list[float]]] = {name: [] for name in names}
    for repeat in range(warmup + repeats):
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for index in range(step_count):
            shift = (repeat * step_count + index) % len(names)
            for name in names[shift:] + names[:shift]:
                seconds[name].extend(steps[name][index]())
        if repeat >= warmup:
            for name in names:
                samples[name].append(seconds[name])
    results = {}
    for name, rounds in samples.items():
        sizes = {len(r) for r in rounds}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(f"candidate {name!r} returned {sorted(sizes)} items across repeats")
        per_item = tuple(TimingSummary.from_seconds(list(values)) for values in zip(*rounds, strict=True))
        results[name] = Measurement(per_item, recorded)
    return results


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
    """What a latency row must carry to be comparable: machine, CPU, cores, threads, and the versions of
    the runtimes loaded (torch on the host, onnxruntime on a device)."""
    tags: dict[str, str | int] = {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "threads": threads,
    }
    for runtime in ("torch", "onnxruntime"):
        module = sys.modules.get(runtime)
        if module is not None:
            tags[runtime] = str(module.__version__).split("+")[0]
    return tags
