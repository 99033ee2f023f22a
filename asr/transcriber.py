"""Transcription of waveforms by a model and a decoder, with each side timed: what ``transcribe``,
``evaluate`` and the device runtime run.

This module imports no torch: an export folder (:mod:`asr.export`) runs through onnxruntime and numpy, so
the same class transcribes on a board that has neither torch nor the training code. A model file (torch)
is loaded on demand through :class:`asr.inference.TorchEncoder`. Both are encoders with one interface:
``encode(waveforms) -> per-utterance (frames, units) log-probabilities as numpy``, plus ``sample_rate``
and ``frame_stride``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from asr.audio import AudioSpans
from asr.onnx_model import ExportedModel
from asr.speech_span import speech_span
from common.errors import SpeechpruneError
from decoding.backends import BackendResult, DecoderSettings, make_decoder
from decoding.search_stats import SearchStats

GREEDY = "greedy"


@dataclass
class Transcript:
    text: str
    token_ids: list[int]
    token_frames: list[int]  # encoder frame at which each token starts
    encoder_ms: float  # share of the batch's encoder time, by audio length
    decoder_ms: float
    score: float | None = None  # the beam-search backend's score (None for greedy decoding)
    stats: SearchStats | None = None  # search statistics (the own decoder only)


class Encoder(Protocol):
    sample_rate: int

    @property
    def frame_stride(self) -> int: ...

    @property
    def parameters(self) -> int | None: ...

    def encode(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]: ...


class Transcriber:
    """A loaded model and a decoder: transcribes batches of waveforms at the model's sample rate.

    ``model`` is a model file or an export folder (:mod:`asr.export`; ``precision`` "int8" picks its int8
    encoder), or an already loaded model (:class:`asr.checkpoint.LoadedModel`). ``decoder`` is a backend
    name of :func:`decoding.backends.make_decoder` ("greedy" by default) built with ``settings``; the
    decoder runs utterance by utterance so that each one's decoder time is its own. ``threads`` is the
    encoder's intra-op thread count (torch's or onnxruntime's). With ``trim_edges`` (the default) a
    waveform is cut to its speech plus a margin before encoding (:func:`asr.speech_span.speech_span`):
    long silence before and after the speech, which training strings never have, costs the model a
    multiple of its error rate.
    """

    def __init__(
        self,
        model: str | os.PathLike | Any,
        threads: int | None = None,
        decoder: str = GREEDY,
        settings: DecoderSettings | None = None,
        precision: str = "float32",
        trim_edges: bool = True,
    ) -> None:
        self.trim_edges = trim_edges
        self.encoder: Encoder
        if isinstance(model, str | os.PathLike) and Path(model).is_dir():  # an export folder
            exported = ExportedModel(model, threads=threads or 1, precision=precision)
            self.encoder, self.pieces, self.metadata = exported, exported.pieces, exported.manifest
        else:
            if precision != "float32":
                raise SpeechpruneError(
                    f"precision {precision}: export the model first (speechprune export --int8)"
                )
            from asr.inference import TorchEncoder  # torch, only for model files

            torch_encoder = TorchEncoder.open(model, threads)
            self.encoder, self.pieces, self.metadata = (
                torch_encoder,
                torch_encoder.tokenizer.pieces,
                torch_encoder.metadata,
            )
        self.decoder = make_decoder(decoder, self.pieces, settings)

    @property
    def sample_rate(self) -> int:
        return self.encoder.sample_rate

    @property
    def frame_seconds(self) -> float:
        """Duration of one encoder output frame (hop x time subsampling), for token timestamps."""
        return self.encoder.frame_stride / self.sample_rate

    def _decode(self, emissions: np.ndarray) -> BackendResult:
        (result,) = self.decoder(emissions[None], np.array([emissions.shape[0]]))
        return result

    def transcribe_long(self, spans: AudioSpans, chunk_seconds: float, context_seconds: float) -> Transcript:
        """A file of any length in bounded memory: encoded ``chunk_seconds`` at a time, each chunk with
        ``context_seconds`` of audio either side that is encoded and then dropped, so that no output frame
        is near a chunk edge (the encoder is bidirectional: frames near an edge miss their context). The
        emissions (about 10 MB per hour) are decoded at once, so the transcript has no seams. Features
        are normalized per chunk instead of per file, the one difference from whole-file encoding; silence
        is not trimmed (a long recording's pauses are inside it, not only at its ends)."""
        stride = self.encoder.frame_stride
        core = max(1, round(chunk_seconds * self.sample_rate / stride)) * stride
        context = round(context_seconds * self.sample_rate / stride) * stride
        pieces, encoder_s = [], 0.0
        for start in range(0, spans.samples, core):
            end = min(start + core, spans.samples)
            left, right = max(0, start - context), min(spans.samples, end + context)
            waveform = spans.read(left, right)
            started = time.perf_counter()
            (log_probs,) = self.encoder.encode([waveform])
            encoder_s += time.perf_counter() - started
            first = (start - left) // stride
            last = log_probs.shape[0] if end == spans.samples else first + (end - start) // stride
            pieces.append(log_probs[first:last])
        return self._transcript(self._decode(np.concatenate(pieces)), encoder_s * 1000)

    def _speech(self, waveform: np.ndarray) -> tuple[np.ndarray, int]:
        """The part of ``waveform`` to encode and its first encoder frame in the whole waveform."""
        if not self.trim_edges:
            return waveform, 0
        start, end = speech_span(waveform, self.sample_rate)
        stride = self.encoder.frame_stride
        # whole encoder frames, so token frames shift exactly; rounded up, so no digital silence the
        # span left out comes back (down when up would leave nothing)
        rounded = -(-start // stride) * stride
        start = rounded if rounded < end else start // stride * stride
        return waveform[start:end], start // stride

    def _transcript(self, result: BackendResult, encoder_ms: float, first_frame: int = 0) -> Transcript:
        return Transcript(
            result.text,
            result.token_ids or [],
            [first_frame + frame for frame in result.token_frames or []],
            encoder_ms,
            result.wall_time_s * 1000,
            None if self.decoder.name == GREEDY else result.score,
            result.stats,
        )

    def transcribe(self, waveforms: Sequence[Any]) -> list[Transcript]:
        """Transcripts of mono waveforms at the model's rate (numpy arrays or torch tensors), encoded as
        one batch (its time shared out by length) and decoded one by one; token frames count from the
        start of each whole waveform."""
        speech = [self._speech(np.asarray(w, dtype=np.float32)) for w in waveforms]
        arrays = [waveform for waveform, _ in speech]
        started = time.perf_counter()
        emissions = self.encoder.encode(arrays)
        encoder_ms = (time.perf_counter() - started) * 1000
        total = sum(a.shape[0] for a in arrays) or 1
        return [
            self._transcript(self._decode(e), encoder_ms * a.shape[0] / total, first)
            for e, a, (_, first) in zip(emissions, arrays, speech, strict=True)
        ]
