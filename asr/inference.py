"""The one inference path for torch models: load audio for evaluation, encode waveforms, time the encoder.

Transcribe (through :class:`TorchEncoder`), evaluate, the study, the latency search and the benchmarks all
run torch models through this module, and decode and time the decoder through :mod:`asr.timing`, so that
"encoder time" and "decoder time" mean the same thing everywhere: encoder = features + network
(``torch.inference_mode``, explicit threads), decoder = the backend's call for one utterance. Batch size 1
(:func:`encode_each`) gives per-utterance latency as on a device; batched encoding (:func:`encode_batched`)
is for accuracy only. Exported models (onnxruntime) take the same roles in :mod:`asr.onnx_model` and
:mod:`asr.timing`, without torch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asr.audio import load_audio
from asr.checkpoint import LoadedModel, load_model
from asr.data.manifest import Utterance, read_manifest
from asr.models.lstm_ctc import count_parameters
from asr.recognizer import SpeechRecognizer
from common.measure import Round
from common.units import normalize_text
from decoding.vocabulary import PieceVocabulary


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

    An utterance's emissions do not depend on what it is batched with (up to float rounding): features
    are computed with ``center=False`` and normalized over each utterance's valid frames, the conv front
    end zeroes the padding between layers, and the LSTMs run packed. Timing per utterance, as a device
    runs, is :func:`encode_each`'s job.
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


class TorchEncoder:
    """A model file's recognizer behind :class:`asr.transcriber.Transcriber`'s encoder interface: one padded
    batch through :func:`encode_batched`, emissions back per utterance as numpy."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.recognizer = loaded.recognizer
        self.tokenizer, self.metadata = loaded.tokenizer, loaded.metadata
        self.sample_rate = loaded.recognizer.sample_rate
        self.frame_stride = loaded.recognizer.frame_stride

    @classmethod
    def open(cls, model: str | os.PathLike | LoadedModel, threads: int | None = None) -> TorchEncoder:
        """Load ``model`` (a file, or already loaded); ``threads`` sets torch's intra-op threads."""
        if threads is not None:
            torch.set_num_threads(threads)
        return cls(model if isinstance(model, LoadedModel) else load_model(Path(model)))

    @property
    def parameters(self) -> int:
        return count_parameters(self.recognizer.encoder)

    def encode(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        tensors = [torch.from_numpy(np.asarray(w, dtype=np.float32)) for w in waveforms]
        return [e.numpy() for e in encode_batched(self.recognizer, tensors, batch_size=max(1, len(tensors)))]


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
