"""Where candidates' latency is measured: the target device, behind one interface.

A target receives *model files and decoder settings*, never in-memory objects, and measures them on the
calibration audio it was given: encoder latency, and decoder latency on the emissions the candidate
itself produced on the target, with the candidate's decoder settings. That is exactly what a remote
board can do too, so a device agent plugs in as another :class:`LatencyTarget`.

:class:`LocalTarget` measures in this process, with an explicit thread count and optionally pinned to a
set of cores (``os.sched_setaffinity``, what ``taskset -c`` does), every candidate of a call interleaved
round by round with the others (:func:`common.measure.interleaved`). Each call also re-measures a
reference model, so that latencies can be compared as ratios taken in the same run, which is what holds
up on a noisy machine.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from asr.checkpoint import load_model
from asr.inference import DecoderRound, encode_each, encoder_round
from common.errors import SpeechpruneError
from common.measure import device_tags, interleaved
from decoding.backends import BackendResult, DecoderSettings, make_decoder


@dataclass(frozen=True)
class TimingJob:
    """One thing to time: a model file decoded with a backend and its settings."""

    model_path: Path
    backend: str
    settings: DecoderSettings


@dataclass(frozen=True)
class Latency:
    """Measured per-utterance means (of per-utterance medians) over the calibration set.

    ``ms_per_second`` = (encoder + decoder) ms per second of audio: the real-time cost a budget in
    "ms/s" is stated in.
    """

    encoder_ms: float
    decoder_ms: float
    audio_seconds_mean: float

    @property
    def end_to_end_ms(self) -> float:
        return self.encoder_ms + self.decoder_ms

    @property
    def ms_per_second(self) -> float:
        return self.end_to_end_ms / self.audio_seconds_mean

    @property
    def encoder_ms_per_second(self) -> float:
        return self.encoder_ms / self.audio_seconds_mean

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 5) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Measured:
    """A job's latency and the decoded results it was timed on (texts for WER, in calibration order)."""

    latency: Latency
    results: list[BackendResult]


class LatencyTarget(ABC):
    """Measures :class:`TimingJob` s on one device, all jobs of a call interleaved."""

    @abstractmethod
    def measure(self, jobs: Mapping[str, TimingJob]) -> dict[str, Measured]:
        """Latency (and decoded results) of every job, measured in one interleaved run."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The device and measurement settings, recorded with every latency (and in cache keys)."""


@contextlib.contextmanager
def pinned_to(cores: list[int] | None) -> Iterator[None]:
    """Run the block on ``cores`` only (as ``taskset -c``), restoring the affinity afterwards."""
    if not cores:
        yield
        return
    if not hasattr(os, "sched_setaffinity"):
        raise SpeechpruneError("target.cores: this platform cannot pin a process to cores")
    previous = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, set(cores))
    except OSError as error:
        raise SpeechpruneError(f"target.cores {cores}: cannot pin to these cores ({error})") from None
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


class LocalTarget(LatencyTarget):
    """This machine: ``threads`` intra-op threads, optionally pinned to ``cores``, ``repeats`` timed rounds
    after ``warmup`` untimed ones, over the calibration ``waveforms``."""

    def __init__(
        self,
        waveforms: list[torch.Tensor],
        sample_rate: int,
        threads: int = 1,
        cores: list[int] | None = None,
        repeats: int = 3,
        warmup: int = 1,
    ) -> None:
        if not waveforms:
            raise SpeechpruneError("the latency target needs calibration audio")
        if threads < 1 or repeats < 1 or warmup < 0:
            raise SpeechpruneError("target: threads and repeats must be >= 1, warmup >= 0")
        self.waveforms = waveforms
        self.sample_rate = sample_rate
        self.threads = threads
        self.cores = list(cores) if cores else None
        self.repeats = repeats
        self.warmup = warmup
        self.audio_seconds_mean = sum(w.shape[0] for w in waveforms) / len(waveforms) / sample_rate

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "local",
            **device_tags(self.threads),
            "cores": self.cores,
            "repeats": self.repeats,
            "utterances": len(self.waveforms),
        }

    def measure(self, jobs: Mapping[str, TimingJob]) -> dict[str, Measured]:
        with pinned_to(self.cores):
            torch.set_num_threads(self.threads)
            models = {name: load_model(job.model_path) for name, job in jobs.items()}
            encoders = interleaved(
                {name: encoder_round(m.recognizer, self.waveforms) for name, m in models.items()},
                repeats=self.repeats,
                warmup=self.warmup,
                threads=self.threads,
            )
            rounds = {
                name: DecoderRound(
                    make_decoder(jobs[name].backend, m.tokenizer, jobs[name].settings),
                    encode_each(m.recognizer, self.waveforms),
                )
                for name, m in models.items()
            }
            decoders = interleaved(rounds, repeats=self.repeats, warmup=self.warmup)
        return {
            name: Measured(
                Latency(encoders[name].mean_ms, decoders[name].mean_ms, self.audio_seconds_mean),
                rounds[name].results,
            )
            for name in jobs
        }
