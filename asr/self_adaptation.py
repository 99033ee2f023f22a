"""Speaker adaptation without transcripts: fine-tune on the model's own confident transcripts of a voice.

A model trained on a handful of speakers errs on a new voice, but most of its errors on one speaker are
scattered: on the utterances it is surest of, its transcripts are right far more often than on the rest.
Fine-tuning on those transcripts of the speaker's own recordings (self-training, as in noisy-student
training and first-pass unsupervised speaker adaptation), with the training augmentation on so that the
model cannot just repeat itself, moves the model toward the voice and microphone it will hear, from
recordings a user has anyway and need not transcribe. On the digits recipe's leave-one-speaker-out
folds this is the largest new-voice lever measured (docs/new_voices.md); a speaker whose errors are
systematic (the same confusion on every string) gains little, because the confident transcripts
carry that confusion.

The adapted file is a normal model file (same layers, new weights) whose metadata says what it was
adapted on under ``self_adaptation``; it runs wherever a model runs (evaluate, transcribe, prune, export).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import soundfile
import torch

from asr.audio import load_audio
from asr.augment import AugmentConfig
from asr.checkpoint import LoadedModel, load_model, save_model
from asr.data.datamodule import DataConfig, SpeechDataModule
from asr.data.manifest import Utterance
from asr.inference import encode_each
from asr.lightning_module import CTCModule
from asr.speech_span import speech_span
from asr.tokenizer import Tokenizer
from asr.voice_warp import VOICE_WARP_KEY
from common.errors import AudioError, SpeechpruneError
from decoding.greedy import greedy_decode_with_timesteps

SELF_ADAPTATION_KEY = "self_adaptation"  # model-file metadata: what the model was adapted on, and how


@dataclass(frozen=True)
class SelfAdaptationConfig:
    """How much of the speaker's speech to trust and how hard to fine-tune on it.

    The defaults were chosen on four of the digits recipe's folds with 200 recordings of the held-out
    speaker and checked on the other two (docs/new_voices.md): the 70% most confident transcripts, 4 epochs
    at a constant 2e-4, every training augmentation on, two rounds (a third gained on four folds and lost
    on two). ``max_seconds`` leaves longer recordings out (neither transcribed nor trained on;
    the adapted model transcribes them like any other): a long recording's transcript is one long target
    that a single error anywhere makes wrong. ``min_recordings`` counts the short ones. ``trim_edges``
    transcribes and fine-tunes on each recording's speech with silence before and after it cut, as
    ``transcribe`` (:class:`asr.transcriber.Transcriber`) then reads it; ``max_seconds`` then counts
    what is left after the cut.
    """

    keep_fraction: float = 0.7
    epochs: int = 4
    rounds: int = 2
    lr: float = 2e-4
    max_batch_size: int = 16
    max_batch_seconds: float = 60.0
    max_seconds: float = 20.0
    min_recordings: int = 20
    seed: int = 0
    trim_edges: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.keep_fraction <= 1:
            raise ValueError(f"keep_fraction must lie in (0, 1], got {self.keep_fraction}")
        if min(self.epochs, self.rounds, self.max_batch_size, self.min_recordings) < 1:
            raise ValueError("epochs, rounds, max_batch_size and min_recordings must be positive")
        if not (self.lr > 0 and self.max_batch_seconds > 0 and self.max_seconds > 0):
            raise ValueError("lr, max_batch_seconds and max_seconds must be positive")


@dataclass(frozen=True)
class PseudoLabel:
    """The model's greedy transcript of one recording and how sure it was of its least certain unit."""

    text: str
    confidence: float


@dataclass(frozen=True)
class SelfAdaptationReport:
    """What the fine-tuning was given: recordings read (and how many of them were too long to use),
    transcripts kept, and the confidence cut-off."""

    recordings: int
    too_long: int
    kept: int
    min_confidence: float
    mean_confidence_kept: float
    bad_files: list[tuple[str, str]]

    def to_dict(self) -> dict:
        return asdict(self)


def pseudo_labels(
    recognizer: torch.nn.Module, tokenizer: Tokenizer, waveforms: Sequence[torch.Tensor]
) -> list[PseudoLabel]:
    """Greedy transcripts with a confidence: the posterior of the least certain unit emitted.

    A unit's posterior is the highest over the run of frames that emits it (a spike and its edges); the
    least certain unit, not the mean, ranks a transcript, because one doubtful digit makes a digit string
    wrong and a mean over many sure frames would hide it. A transcript with no unit has confidence 0.
    """
    labels = []
    # one recording at a time, as a device and `evaluate` hear them
    for emissions in encode_each(recognizer.eval(), waveforms):
        frames = emissions.shape[0]
        [(units, starts)] = greedy_decode_with_timesteps(
            emissions[None], torch.tensor([frames]), tokenizer.blank_id
        )
        best = emissions.max(dim=-1)
        peaks = []
        for unit, start in zip(units, starts, strict=True):
            end = start + 1
            while end < frames and int(best.indices[end]) == unit:
                end += 1
            peaks.append(float(best.values[start:end].max().exp()))
        labels.append(PseudoLabel(tokenizer.decode(units), min(peaks, default=0.0)))
    return labels


def most_confident(labels: Sequence[PseudoLabel], keep_fraction: float) -> list[int]:
    """Indices of the ``keep_fraction`` most confident non-empty transcripts, most confident first."""
    ranked = sorted(
        (i for i, label in enumerate(labels) if label.text.strip()), key=lambda i: -labels[i].confidence
    )
    return ranked[: max(1, round(len(labels) * keep_fraction))] if ranked else []


def _fine_tune(
    loaded: LoadedModel,
    training: list[Utterance],
    augment: AugmentConfig,
    config: SelfAdaptationConfig,
    progress: bool,
) -> torch.nn.Module:
    """Fine-tune a copy of the model on ``training`` with ``augment`` (one training loop:
    :class:`CTCModule`'s), at a constant learning rate and without weight decay: a few hundred steps
    near the trained weights, where a schedule's warm-up and decay would only shorten the useful part."""
    L.seed_everything(config.seed, verbose=False)
    module = CTCModule.from_loaded(
        loaded,
        optim={"lr": config.lr, "weight_decay": 0.0, "warmup_fraction": 0.0, "final_lr_fraction": 1.0},
        augment=asdict(augment),
    )
    data = SpeechDataModule.from_utterances(
        training,
        DataConfig(
            max_batch_seconds=config.max_batch_seconds,
            max_batch_size=config.max_batch_size,
            max_duration=config.max_seconds,
            num_workers=0,
            seed=config.seed,
        ),
        loaded.tokenizer,
        loaded.recognizer.sample_rate,
        augment,
    )
    lightning_log = logging.getLogger("lightning.pytorch")  # its "GPU available" lines and tips
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(prefix="speechprune-self-adapt-") as scratch:
            trainer = L.Trainer(
                default_root_dir=scratch,  # nothing is written, but Lightning never picks the cwd
                max_epochs=config.epochs,
                accelerator="cpu",
                logger=False,
                enable_checkpointing=False,
                enable_model_summary=False,
                enable_progress_bar=progress,
                limit_val_batches=0,
                num_sanity_val_steps=0,
                gradient_clip_val=5.0,
                use_distributed_sampler=False,
            )
            trainer.fit(module, datamodule=data)
    finally:
        lightning_log.setLevel(level)
    return module.recognizer.eval()


def self_adapt(
    loaded: LoadedModel,
    utterances: Sequence[Utterance],
    waveforms: Sequence[torch.Tensor],
    augment: AugmentConfig,
    config: SelfAdaptationConfig = SelfAdaptationConfig(),
    progress: bool = False,
) -> tuple[torch.nn.Module, list[PseudoLabel | None], list[int]]:
    """The model fine-tuned on its confident transcripts of ``utterances`` (their text is not read).

    Returns the adapted recognizer, each recording's pseudo-label in the last round (None for one longer
    than ``config.max_seconds``, left out) and the indices of those that round trained on.
    """
    if loaded.recognizer.encoder.config.unit_gates != "none":
        raise SpeechpruneError(
            "this model still carries VIBNet unit gates (a pruning checkpoint): self-adapt a pruned "
            "snapshot (snapshots/sparsityNN.pt) or the exported model.pt"
        )
    short = [i for i, u in enumerate(utterances) if u.duration <= config.max_seconds]
    if len(short) < config.min_recordings:
        longer = len(utterances) - len(short)
        raise SpeechpruneError(
            f"self-adaptation needs at least {config.min_recordings} recordings of the speaker of "
            f"{config.max_seconds:g} s or less, got {len(short)} ({longer} longer): on fewer, fine-tuning "
            "learns the few transcripts, not the voice"
        )
    recognizer = loaded.recognizer
    for _ in range(config.rounds):  # each round transcribes anew with the model the last one adapted
        transcribed = pseudo_labels(recognizer, loaded.tokenizer, [waveforms[i] for i in short])
        kept = [short[i] for i in most_confident(transcribed, config.keep_fraction)]
        if not kept:
            raise SpeechpruneError("the model transcribed no word in any recording: nothing to adapt on")
        labels: list[PseudoLabel | None] = [None] * len(utterances)
        for i, label in zip(short, transcribed, strict=True):
            labels[i] = label
        training = [
            Utterance(utterances[i].audio_filepath, utterances[i].duration, labels[i].text) for i in kept
        ]
        current = dataclasses.replace(loaded, recognizer=recognizer)
        recognizer = _fine_tune(current, training, augment, config, progress)
    return recognizer, labels, kept


def self_adapt_model_file(
    model_path: str | os.PathLike,
    recordings: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    augment: AugmentConfig,
    config: SelfAdaptationConfig = SelfAdaptationConfig(),
    progress: bool = False,
) -> SelfAdaptationReport:
    """Adapt ``model_path`` to the speaker of ``recordings`` (audio, no transcripts); write ``out_path``.

    Unreadable files are skipped and listed in the report (the adaptation goes on without them). A model
    already self-adapted is refused: adapt the original on all the speaker's recordings at once, so that
    no recording's transcript is learned twice.
    """
    loaded = load_model(model_path)
    if SELF_ADAPTATION_KEY in loaded.metadata:
        raise SpeechpruneError(f"{model_path}: already self-adapted; adapt the original model")
    sample_rate = loaded.recognizer.sample_rate
    utterances, waveforms, bad = [], [], []
    # The fine-tuning reads its audio from files: trimmed recordings are written to a scratch folder.
    with tempfile.TemporaryDirectory(prefix="speechprune-self-adapt-audio-") as scratch:
        for index, path in enumerate(recordings):
            try:
                waveform = load_audio(path, sample_rate)
            except AudioError as error:
                bad.append((str(path), str(error)))
                continue
            source = str(Path(path).resolve())
            if config.trim_edges:
                start, end = speech_span(waveform.numpy(), sample_rate)
                waveform = waveform[start:end]
                if waveform.shape[0] <= config.max_seconds * sample_rate:  # longer ones are not trained on
                    source = str(Path(scratch) / f"{index:06d}.wav")
                    # float samples: what the pseudo-label is transcribed from, not clipped or requantized
                    soundfile.write(source, waveform.numpy(), sample_rate, subtype="FLOAT")
            waveforms.append(waveform)
            utterances.append(Utterance(source, waveform.shape[0] / sample_rate, ""))
        recognizer, labels, kept = self_adapt(loaded, utterances, waveforms, augment, config, progress)
    confidences = [labels[i].confidence for i in kept]
    report = SelfAdaptationReport(
        recordings=len(waveforms),
        too_long=sum(label is None for label in labels),
        kept=len(kept),
        min_confidence=round(min(confidences), 4),
        mean_confidence_kept=round(sum(confidences) / len(confidences), 4),
        bad_files=bad,
    )
    # The original's metadata (its validation scores, a snapshot's sparsity) describes other weights: it
    # is kept, nested, for the record; only a voice warp, which the adapted filterbank still holds, stays.
    metadata = {key: loaded.metadata[key] for key in (VOICE_WARP_KEY,) if key in loaded.metadata}
    metadata[SELF_ADAPTATION_KEY] = {
        **{k: v for k, v in report.to_dict().items() if k != "bad_files"},
        "config": asdict(config),
        "augment": asdict(augment),
        "adapted_from": str(model_path),
        "original_metadata": loaded.metadata,
    }
    save_model(out_path, recognizer, loaded.tokenizer, metadata)
    return report
