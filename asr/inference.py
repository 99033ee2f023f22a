"""The one inference path: load a model file, encode waveforms, decode with any backend, time both sides.

Transcribe, evaluate, the study, the latency search and the benchmarks all run models through this module,
so that "encoder time" and "decoder time" mean the same thing everywhere: encoder = features + network
(``torch.inference_mode``, explicit threads), decoder = the backend's call for one utterance. Batch size 1
(:func:`encode_each`) gives per-utterance latency as on a device; batched encoding (:func:`encode_batched`)
is for accuracy only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asr.audio import AudioSpans, load_audio
from asr.checkpoint import LoadedModel, load_model
from asr.data.manifest import Utterance, read_manifest
from asr.onnx_model import ExportedModel
from asr.recognizer import SpeechRecognizer
from common.errors import SpeechpruneError
from common.measure import Round
from common.units import normalize_text
from decoding.backends import BackendResult, DecoderBackend, DecoderSettings, make_decoder
from decoding.search_stats import SearchStats
from decoding.vocabulary import PieceVocabulary

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


@dataclass
class EvaluationAudio:
    """Utterances of a manifest with their waveforms at the model's rate and normalized references."""

    utterances: list[Utterance]
    waveforms: list[torch.Tensor]
    references: list[str]

    @property
    def audio_seconds(self) -> list[float]:
        return [u.duration for u in self.utterances]


def spread_subset(utterances: list[Utterance], limit: int | None) -> list[Utterance]:
    """``limit`` utterances evenly spread over the manifest (manifests are often grouped by speaker)."""
    if limit is None or limit >= len(utterances):
        return utterances
    step = len(utterances) / limit
    return [utterances[int(i * step)] for i in range(limit)]


def load_evaluation_audio(
    manifest: str | os.PathLike, sample_rate: int, limit: int | None = None
) -> EvaluationAudio:
    """Read ``limit`` utterances spread over ``manifest`` (all when None), resampled to ``sample_rate``.

    Durations are re-measured from the audio read, so manifests with stale durations still give true RTFs.
    """
    chosen = spread_subset(read_manifest(manifest), limit)
    waveforms = [load_audio(u.audio_filepath, sample_rate) for u in chosen]
    utterances = [
        Utterance(u.audio_filepath, w.shape[0] / sample_rate, u.text, u.speaker)
        for u, w in zip(chosen, waveforms, strict=True)
    ]
    return EvaluationAudio(utterances, waveforms, [normalize_text(u.text) for u in chosen])


def stack_emissions(emissions: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames, vocab) emissions -> padded (batch, frames, vocab) log-probabilities and their lengths."""
    lengths = torch.tensor([e.shape[0] for e in emissions])
    return torch.nn.utils.rnn.pad_sequence(list(emissions), batch_first=True), lengths


@torch.inference_mode()
def encode_each(recognizer: SpeechRecognizer, waveforms: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """(frames, vocab) log-probabilities of each utterance, encoded alone (batch size 1, as on a device)."""
    outputs = []
    for waveform in waveforms:
        log_probs, lengths = recognizer(waveform[None], torch.tensor([waveform.shape[0]]))
        outputs.append(log_probs[0, : int(lengths[0])].contiguous())
    return outputs


@torch.inference_mode()
def encode_batched(
    recognizer: SpeechRecognizer, waveforms: Sequence[torch.Tensor], batch_size: int = 32
) -> list[torch.Tensor]:
    """Like :func:`encode_each` but ``batch_size`` utterances per forward pass: for accuracy, not timing.

    Features are computed with ``center=False`` and per-utterance normalization over valid frames, so an
    utterance's emissions do not depend on what it is batched with.
    """
    outputs = []
    for start in range(0, len(waveforms), batch_size):
        chunk = list(waveforms[start : start + batch_size])
        lengths = torch.tensor([w.shape[0] for w in chunk])
        log_probs, frames = recognizer(torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True), lengths)
        outputs += [lp[: int(n)].contiguous() for lp, n in zip(log_probs, frames, strict=True)]
    return outputs


def encoder_steps(recognizer: SpeechRecognizer, waveforms: Sequence[torch.Tensor]) -> list[Round]:
    """Timing steps (:func:`common.measure.interleaved`): one per utterance, encoded alone, its seconds."""

    def step(waveform: torch.Tensor) -> Round:
        length = torch.tensor([waveform.shape[0]])

        @torch.inference_mode()
        def run() -> list[float]:
            started = time.perf_counter()
            recognizer(waveform[None], length)
            return [time.perf_counter() - started]

        return run

    return [step(waveform) for waveform in waveforms]


def exported_steps(model: ExportedModel, waveforms: Sequence[torch.Tensor | np.ndarray]) -> list[Round]:
    """Timing steps of an exported encoder (numpy front end + onnxruntime), one utterance each: what
    :func:`encoder_steps` times for a torch model."""

    def step(samples: np.ndarray) -> Round:
        def run() -> list[float]:
            started = time.perf_counter()
            model.log_probs(samples)
            return [time.perf_counter() - started]

        return run

    return [step(np.asarray(w, dtype=np.float32)) for w in waveforms]


class DecoderSteps(SequenceABC):
    """Timing steps that decode one utterance's emissions each with one backend; keep the last results.

    The backend times each utterance's decode call itself (:class:`decoding.backends.DecoderBackend`),
    so a step returns those seconds and no conversion or padding is counted. ``results`` holds the last
    decoded result of every utterance, in order, once every step has run.
    """

    def __init__(self, decoder: DecoderBackend, emissions: Sequence[torch.Tensor]) -> None:
        self.decoder = decoder
        self.emissions = [e.detach().to(device="cpu", dtype=torch.float32)[None] for e in emissions]
        self.results: list[BackendResult | None] = [None] * len(self.emissions)

    def __len__(self) -> int:
        return len(self.emissions)

    def __getitem__(self, index: int) -> Round:  # type: ignore[override]
        emission = self.emissions[index]
        length = torch.tensor([emission.shape[1]])

        def run() -> list[float]:
            (result,) = self.decoder(emission, length)
            self.results[index] = result
            return [result.wall_time_s]

        return run

    @property
    def decoded(self) -> list[BackendResult]:
        """The last results of every utterance (each step must have run at least once)."""
        if any(r is None for r in self.results):
            raise RuntimeError("DecoderSteps.decoded before every utterance was decoded")
        return list(self.results)  # type: ignore[arg-type]


class ExportedRecognizer:
    """An export folder (:mod:`asr.export`) behind the recognizer's call, so that transcription runs the
    exported (optionally int8) ONNX encoder exactly as it runs the torch model: utterance by utterance
    through onnxruntime, emissions padded back into a batch."""

    def __init__(self, model: ExportedModel) -> None:
        self.model = model
        self.sample_rate = model.sample_rate
        self.frame_stride = int(round(model.frame_seconds * model.sample_rate))

    def __call__(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emissions = [
            torch.from_numpy(self.model.log_probs(w[: int(n)].numpy()))
            for w, n in zip(waveforms, lengths, strict=True)
        ]
        return stack_emissions(emissions)


class Transcriber:
    """A loaded model and a decoder: transcribes batches of waveforms at the model's sample rate.

    ``model`` is a model file or an export folder (:mod:`asr.export`; ``precision`` "int8" picks its int8
    encoder). ``decoder`` is a backend name of :func:`decoding.backends.make_decoder` ("greedy" by
    default) built with ``settings``; the decoder runs utterance by utterance so that each one's decoder
    time is its own.
    """

    def __init__(
        self,
        model: str | os.PathLike | LoadedModel,
        threads: int | None = None,
        decoder: str = GREEDY,
        settings: DecoderSettings | None = None,
        precision: str = "float32",
    ) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.recognizer: SpeechRecognizer | ExportedRecognizer
        if not isinstance(model, LoadedModel) and Path(model).is_dir():  # an export folder
            exported = ExportedModel(model, threads=threads or 1, precision=precision)
            self.recognizer, self.tokenizer, self.metadata = (
                ExportedRecognizer(exported),
                exported,
                exported.manifest,
            )
        else:
            if precision != "float32":
                raise SpeechpruneError(
                    f"precision {precision}: export the model first (speechprune export --int8)"
                )
            loaded = model if isinstance(model, LoadedModel) else load_model(Path(model))
            self.recognizer, self.tokenizer, self.metadata = (
                loaded.recognizer,
                loaded.tokenizer,
                loaded.metadata,
            )
        self.decoder = make_decoder(decoder, self.tokenizer.pieces, settings)

    @property
    def sample_rate(self) -> int:
        return self.recognizer.sample_rate

    @property
    def frame_seconds(self) -> float:
        """Duration of one encoder output frame (hop x time subsampling), for token timestamps."""
        return self.recognizer.frame_stride / self.sample_rate

    @torch.inference_mode()
    def transcribe_long(self, spans: AudioSpans, chunk_seconds: float, context_seconds: float) -> Transcript:
        """A file of any length in bounded memory: encoded ``chunk_seconds`` at a time, each chunk with
        ``context_seconds`` of audio either side that is encoded and then dropped, so that no output frame
        is near a chunk edge (the encoder is bidirectional: frames near an edge miss their context). The
        emissions (about 10 MB per hour) are decoded at once, so the transcript has no seams. Features
        are normalized per chunk instead of per file, the one difference from whole-file encoding."""
        stride = self.recognizer.frame_stride
        core = max(1, round(chunk_seconds * self.sample_rate / stride)) * stride
        context = round(context_seconds * self.sample_rate / stride) * stride
        pieces, encoder_s = [], 0.0
        for start in range(0, spans.samples, core):
            end = min(start + core, spans.samples)
            left, right = max(0, start - context), min(spans.samples, end + context)
            waveform = spans.read(left, right)
            started = time.perf_counter()
            log_probs, frames = self.recognizer(waveform[None], torch.tensor([waveform.shape[0]]))
            encoder_s += time.perf_counter() - started
            first = (start - left) // stride
            last = int(frames[0]) if end == spans.samples else first + (end - start) // stride
            pieces.append(log_probs[0, first:last])
        emissions = torch.cat(pieces)[None]
        (result,) = self.decoder(emissions, torch.tensor([emissions.shape[1]]))
        return self._transcript(result, encoder_s * 1000)

    def _transcript(self, result: BackendResult, encoder_ms: float) -> Transcript:
        return Transcript(
            result.text,
            result.token_ids or [],
            result.token_frames or [],
            encoder_ms,
            result.wall_time_s * 1000,
            None if self.decoder.name == GREEDY else result.score,
            result.stats,
        )

    @torch.inference_mode()
    def transcribe(self, waveforms: list[torch.Tensor]) -> list[Transcript]:
        lengths = torch.tensor([w.shape[0] for w in waveforms])
        batch = torch.nn.utils.rnn.pad_sequence(waveforms, batch_first=True)
        started = time.perf_counter()
        log_probs, frame_lengths = self.recognizer(batch, lengths)
        encoder_ms = (time.perf_counter() - started) * 1000
        shares = (lengths / lengths.sum()).tolist()
        return [
            self._transcript(r, encoder_ms * share)
            for r, share in zip(self.decoder(log_probs, frame_lengths), shares, strict=True)
        ]


def ctc_loss(
    emissions: Sequence[torch.Tensor],
    references: Sequence[str],
    tokenizer: PieceVocabulary,
    blank_id: int = 0,
) -> float:
    """Mean CTC loss per utterance (normalized by target length, as in training) of references under
    emissions: a smooth accuracy measure for ranking models on a small calibration set, where WER ties."""
    targets = [torch.tensor(tokenizer.encode(text), dtype=torch.long) for text in references]
    log_probs, lengths = stack_emissions(emissions)
    with torch.inference_mode():
        loss = torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1).float(),
            torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long),
            lengths,
            torch.tensor([t.numel() for t in targets]),
            blank=blank_id,
            reduction="mean",
            zero_infinity=True,
        )
    return float(loss)
