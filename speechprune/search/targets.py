"""Where candidates' latency is measured: the target device, behind one interface.

A target receives *model files and decoder settings*, never in-memory objects, and measures them on the
calibration audio: encoder latency, and decoder latency on the emissions the candidate itself produced
on the target, with the candidate's decoder settings. That is exactly what a remote board can do too, so
a device agent plugs in as another :class:`LatencyTarget`.

:class:`LocalTarget` measures in a fresh worker process (:mod:`speechprune.search.worker`) that gets the
same JSON request a device would: model files, decoder settings, the calibration manifest, threads and
cores. A fresh process matters: inside a long search the process grows (2 GB after an hour here) and
the same decoder on the same emissions was measured 2.2 ms at the start and 9.4 ms at the end, because
allocation-heavy code slows down in a large, fragmented heap; a device runtime is a small process. The
worker pins itself to ``cores`` (``os.sched_setaffinity``, what ``taskset -c`` does), sets the thread
count and runs every candidate of the call interleaved (:func:`common.measure.interleaved`). Each call
also re-measures a reference model, so that latencies are compared as ratios taken in the same run,
which is what holds up on a noisy machine.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from asr.checkpoint import load_model
from asr.inference import encode_each, encoder_steps, load_evaluation_audio
from asr.onnx_model import RUNTIMES, precision_of
from asr.timing import DecoderSteps
from common.errors import SpeechpruneError
from common.measure import device_tags, interleaved
from decoding.backends import DecoderSettings, make_decoder
from speechprune.device.agent import DECODER_FILES


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
    """A job's latency and the texts it decoded while being timed (for WER, in calibration order)."""

    latency: Latency
    texts: list[str]


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


def measure_jobs(
    jobs: Mapping[str, TimingJob], waveforms: list[torch.Tensor], threads: int, repeats: int, warmup: int
) -> dict[str, Measured]:
    """Encoder and decoder latency of every job on ``waveforms``, in this process, interleaved."""
    torch.set_num_threads(threads)
    audio_seconds_mean = 0.0
    models = {name: load_model(job.model_path) for name, job in jobs.items()}
    if models:
        rate = next(iter(models.values())).recognizer.sample_rate
        audio_seconds_mean = sum(w.shape[0] for w in waveforms) / len(waveforms) / rate
    encoders = interleaved(
        {name: encoder_steps(m.recognizer, waveforms) for name, m in models.items()},
        repeats=repeats,
        warmup=warmup,
        threads=threads,
    )
    steps = {
        name: DecoderSteps(
            make_decoder(jobs[name].backend, m.tokenizer, jobs[name].settings),
            encode_each(m.recognizer, waveforms),
        )
        for name, m in models.items()
    }
    decoders = interleaved(steps, repeats=repeats, warmup=warmup)
    return {
        name: Measured(
            Latency(encoders[name].mean_ms, decoders[name].mean_ms, audio_seconds_mean),
            [r.text for r in steps[name].decoded],
        )
        for name in jobs
    }


class LocalTarget(LatencyTarget):
    """This machine, measured in a fresh worker process per call: ``threads`` intra-op threads,
    optionally pinned to ``cores``, ``repeats`` timed rounds after ``warmup`` untimed ones, over the
    calibration manifest's first ``limit`` utterances (spread as :func:`load_evaluation_audio` does)."""

    def __init__(
        self,
        manifest: Path,
        limit: int,
        sample_rate: int,
        threads: int = 1,
        cores: list[int] | None = None,
        repeats: int = 3,
        warmup: int = 1,
        runtime: str = "torch",
    ) -> None:
        if threads < 1 or repeats < 1 or warmup < 0:
            raise SpeechpruneError("target: threads and repeats must be >= 1, warmup >= 0")
        if runtime not in RUNTIMES:
            raise SpeechpruneError(f"target.runtime {runtime!r}: one of {', '.join(RUNTIMES)}")
        self.runtime = runtime
        if cores and not hasattr(os, "sched_setaffinity"):
            raise SpeechpruneError("target.cores: this platform cannot pin a process to cores")
        self.manifest = Path(manifest)
        self.limit = limit
        self.sample_rate = sample_rate
        self.threads = threads
        self.cores = list(cores) if cores else None
        self.repeats = repeats
        self.warmup = warmup
        self.utterances = len(load_evaluation_audio(self.manifest, sample_rate, limit).references)
        if not self.utterances:
            raise SpeechpruneError(f"{self.manifest}: the latency target needs calibration audio")

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "local",
            **device_tags(self.threads),
            "runtime": self.runtime,
            "cores": self.cores,
            "repeats": self.repeats,
            "utterances": self.utterances,
            "process": "fresh worker per measurement",
        }

    def request(
        self, jobs: Mapping[str, TimingJob], exports: Mapping[str, Path] | None = None
    ) -> dict[str, Any]:
        """The JSON request the worker answers; with an ONNX runtime, ``exports`` holds each job's export
        folder (the worker then times onnxruntime, as the device agent does)."""
        return {
            "runtime": self.runtime,
            "calibration": {
                "manifest": str(self.manifest),
                "limit": self.limit,
                "sample_rate": self.sample_rate,
            },
            "threads": self.threads,
            "cores": self.cores,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "jobs": {
                name: {
                    "model": str(job.model_path),
                    "backend": job.backend,
                    "settings": settings_to_dict(job.settings),
                    **({"export": str(exports[name])} if exports else {}),
                }
                for name, job in jobs.items()
            },
        }

    def measure(self, jobs: Mapping[str, TimingJob]) -> dict[str, Measured]:
        environment = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        with tempfile.TemporaryDirectory(prefix="speechprune-export-") as scratch:
            exports = None if self.runtime == "torch" else export_jobs(jobs, Path(scratch), self.runtime)
            completed = subprocess.run(
                [sys.executable, "-m", "speechprune.search.worker"],
                input=json.dumps(self.request(jobs, exports)),
                capture_output=True,
                text=True,
                env=environment,
                check=False,
            )
        if completed.returncode != 0:
            lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
            raise SpeechpruneError(f"latency worker failed: {lines[-1] if lines else completed.returncode}")
        return parse_response(completed.stdout)


def export_jobs(jobs: Mapping[str, TimingJob], scratch: Path, runtime: str) -> dict[str, Path]:
    """Each job's model exported (speechprune export, with int8 for onnx-int8) under ``scratch``."""
    from asr.export import export_model  # onnx, only when an ONNX runtime is timed

    return {
        name: export_model(job.model_path, scratch / f"job{index}", int8=runtime == "onnx-int8").parent
        for index, (name, job) in enumerate(jobs.items())
    }


def settings_to_dict(settings: DecoderSettings) -> dict[str, Any]:
    """Decoder settings as plain JSON values (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()}


def settings_from_dict(values: dict[str, Any]) -> DecoderSettings:
    """The inverse of :func:`settings_to_dict` (a ``backend`` key, as records carry it, is ignored)."""
    return DecoderSettings(**{k: v for k, v in values.items() if k != "backend"})


def parse_response(text: str) -> dict[str, Measured]:
    """A worker's (or device agent's) JSON answer as :class:`Measured` per job."""
    try:
        payload = json.loads(text.strip().splitlines()[-1])
        return {
            name: Measured(
                Latency(float(job["encoder_ms"]), float(job["decoder_ms"]), float(job["audio_seconds_mean"])),
                [str(t) for t in job["texts"]],
            )
            for name, job in payload["jobs"].items()
        }
    except (IndexError, KeyError, TypeError, ValueError) as error:
        raise SpeechpruneError(f"latency worker: malformed answer ({error})") from None


class RemoteTarget(LatencyTarget):
    """A board running ``speechprune device serve``: each call exports the jobs' models (ONNX, float32 or
    int8), sends them with the calibration audio and decoder settings, and reads back the agent's
    interleaved medians, decoded texts and device description (the local worker's answer)."""

    def __init__(
        self,
        url: str,
        token: str,
        manifest: Path,
        limit: int,
        sample_rate: int,
        threads: int = 1,
        repeats: int = 3,
        warmup: int = 1,
        runtime: str = "onnx",
        timeout_s: float = 600.0,
    ) -> None:
        if runtime not in RUNTIMES[1:]:
            raise SpeechpruneError(
                f"target.runtime {runtime!r}: a board runs exports, {' or '.join(RUNTIMES[1:])}"
            )
        self.url, self.token, self.runtime, self.timeout_s = url.rstrip("/"), token, runtime, timeout_s
        self.sample_rate, self.threads, self.repeats, self.warmup = sample_rate, threads, repeats, warmup
        audio = load_evaluation_audio(manifest, sample_rate, limit)
        if not audio.waveforms:
            raise SpeechpruneError(f"{manifest}: the latency target needs calibration audio")
        self.audio = [
            base64.b64encode(w.numpy().astype("float32").tobytes()).decode() for w in audio.waveforms
        ]
        self.device = self._call("GET", "/describe")["device"]

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read()).get("error", error.reason)
            except (json.JSONDecodeError, AttributeError):
                message = error.reason
            raise SpeechpruneError(f"device agent {self.url}: {error.code} {message}") from None
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as error:
            raise SpeechpruneError(f"device agent {self.url}: unreachable or garbled ({error})") from None

    def describe(self) -> dict[str, Any]:
        return {"kind": "remote", "url": self.url, "runtime": self.runtime, "repeats": self.repeats,
                "utterances": len(self.audio), **self.device}  # fmt: skip

    def measure(self, jobs: Mapping[str, TimingJob]) -> dict[str, Measured]:
        request: dict[str, Any] = {
            "audio": self.audio,
            "sample_rate": self.sample_rate,
            "threads": self.threads,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "jobs": {},
        }
        with tempfile.TemporaryDirectory(prefix="speechprune-export-") as scratch:
            for name, folder in export_jobs(jobs, Path(scratch), self.runtime).items():
                job = jobs[name]
                settings = settings_to_dict(job.settings)
                files = {}  # the decoder's LM and lexicon travel with the job: the board has no copies
                for key, field in DECODER_FILES.items():
                    if settings[field] is not None:
                        files[key] = base64.b64encode(Path(settings[field]).read_bytes()).decode()
                        settings[field] = None
                request["jobs"][name] = {
                    "export": {f.name: base64.b64encode(f.read_bytes()).decode() for f in folder.iterdir()},
                    "precision": precision_of(self.runtime),
                    "backend": job.backend,
                    "settings": settings,
                    **files,
                }
        return parse_response(json.dumps(self._call("POST", "/measure", request)))
