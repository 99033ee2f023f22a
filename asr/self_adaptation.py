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

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch

from asr.audio import load_audio
from asr.augment import AugmentConfig
from asr.checkpoint import LoadedModel, load_model, save_model
from asr.data.datamodule import DataConfig, SpeechDataModule
from asr.data.manifest import Utterance
from asr.inference import encode_batched
from asr.lightning_module import CTCModule
from asr.tokenizer import Tokenizer
from common.errors import AudioError, SpeechpruneError
from decoding.greedy import greedy_decode

SELF_ADAPTATION_KEY = "self_adaptation"  # model-file metadata: what the model was adapted on, and how


@dataclass(frozen=True)
class SelfAdaptationConfig:
    """How much of the speaker's speech to trust and how hard to fine-tune on it.

    The defaults were chosen on the digits recipe's folds with 200 recordings of the held-out speaker
    (docs/new_voices.md): the 70% most confident transcripts, 4 epochs at a constant 2e-4, every training
    augmentation on. ``max_seconds`` leaves longer recordings out of the fine-tuning (they are still
    transcribed by the adapted model): a long recording's transcript is one long target that a single
    error anywhere makes wrong.
    """

    keep_fraction: float = 0.7
    epochs: int = 4
    lr: float = 2e-4
    max_batch_size: int = 16
    max_batch_seconds: float = 60.0
    max_seconds: float = 20.0
    min_recordings: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.keep_fraction <= 1:
            raise ValueError(f"keep_fraction must lie in (0, 1], got {self.keep_fraction}")
        if self.epochs < 1 or self.max_batch_size < 1 or self.min_recordings < 1:
            raise ValueError("epochs, max_batch_size and min_recordings must be positive")
        if not (self.lr > 0 and self.max_batch_seconds > 0 and self.max_seconds > 0):
            raise ValueError("lr, max_batch_seconds and max_seconds must be positive")


@dataclass(frozen=True)
class PseudoLabel:
    """The model's greedy transcript of one recording and how sure it was of its least certain unit."""

    text: str
    confidence: float


@dataclass(frozen=True)
class SelfAdaptationReport:
    """What the fine-tuning was given: recordings read, transcripts kept, and the confidence cut-off."""

    recordings: int
    kept: int
    min_confidence: float
    mean_confidence_kept: float
    bad_files: list[tuple[str, str]]

    def to_dict(self) -> dict:
        return asdict(self)


def pseudo_labels(
    recognizer: torch.nn.Module, tokenizer: Tokenizer, waveforms: Sequence[torch.Tensor]
) -> list[PseudoLabel]:
    """Greedy transcripts with a confidence: the lowest posterior among the frames that emit a unit.

    The least certain unit, not the mean, ranks a transcript: one doubtful digit makes a digit string
    wrong, and a mean over many sure frames would hide it. A transcript with no unit has confidence 0.
    """
    labels = []
    for emissions in encode_batched(recognizer.eval(), waveforms):
        ids = greedy_decode(emissions[None], torch.tensor([emissions.shape[0]]), tokenizer.blank_id)[0]
        best = emissions.max(dim=-1)
        emitting = best.indices != tokenizer.blank_id
        confidence = float(best.values[emitting].exp().min()) if bool(emitting.any()) else 0.0
        labels.append(PseudoLabel(tokenizer.decode(ids), confidence))
    return labels


def most_confident(labels: Sequence[PseudoLabel], keep_fraction: float) -> list[int]:
    """Indices of the ``keep_fraction`` most confident non-empty transcripts, most confident first."""
    ranked = sorted(
        (i for i, label in enumerate(labels) if label.text.strip()), key=lambda i: -labels[i].confidence
    )
    return ranked[: max(1, round(len(labels) * keep_fraction))] if ranked else []


def _fine_tune(
    loaded: LoadedModel, training: list[Utterance], augment: AugmentConfig, config: SelfAdaptationConfig
) -> torch.nn.Module:
    """Fine-tune a copy of the model on ``training`` with the recipe's augmentation (one training loop:
    :class:`CTCModule`'s), at a constant learning rate and without weight decay: a few hundred steps
    near the trained weights, where a schedule's warm-up and decay would only shorten the useful part."""
    L.seed_everything(config.seed, verbose=False)
    module = CTCModule(
        features=asdict(loaded.recognizer.features.config),
        model=loaded.recognizer.encoder.config.to_dict(),
        optim={"lr": config.lr, "weight_decay": 0.0, "warmup_fraction": 0.0, "final_lr_fraction": 1.0},
        augment=asdict(augment),
        tokenizer=loaded.tokenizer,
    )
    module.recognizer.load_state_dict(loaded.recognizer.state_dict())
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
    trainer = L.Trainer(
        max_epochs=config.epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=5.0,
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=data)
    return module.recognizer.eval()


def self_adapt(
    loaded: LoadedModel,
    utterances: Sequence[Utterance],
    waveforms: Sequence[torch.Tensor],
    augment: AugmentConfig,
    config: SelfAdaptationConfig = SelfAdaptationConfig(),
) -> tuple[torch.nn.Module, list[PseudoLabel | None], list[int]]:
    """The model fine-tuned on its confident transcripts of ``utterances`` (their text is not read).

    Returns the adapted recognizer, each recording's pseudo-label (None for one longer than
    ``config.max_seconds``, left out) and the indices of those trained on.
    """
    if len(waveforms) < config.min_recordings:
        raise SpeechpruneError(
            f"self-adaptation needs at least {config.min_recordings} recordings of the speaker, got "
            f"{len(waveforms)}: on fewer, fine-tuning learns the few transcripts, not the voice"
        )
    short = [i for i, u in enumerate(utterances) if u.duration <= config.max_seconds]
    if not short:
        raise SpeechpruneError(
            f"no recording is {config.max_seconds:g} s or shorter: self-adaptation fine-tunes on short "
            "recordings (an utterance each); cut long ones"
        )
    transcribed = pseudo_labels(loaded.recognizer, loaded.tokenizer, [waveforms[i] for i in short])
    labels: list[PseudoLabel | None] = [None] * len(utterances)
    for i, label in zip(short, transcribed, strict=True):
        labels[i] = label
    kept = [short[i] for i in most_confident(transcribed, config.keep_fraction)]
    if not kept:
        raise SpeechpruneError("the model transcribed no word in any recording: nothing to adapt on")
    training = [Utterance(utterances[i].audio_filepath, utterances[i].duration, labels[i].text) for i in kept]
    return _fine_tune(loaded, training, augment, config), labels, kept


def self_adapt_model_file(
    model_path: str | os.PathLike,
    recordings: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    augment: AugmentConfig,
    config: SelfAdaptationConfig = SelfAdaptationConfig(),
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
    for path in recordings:
        try:
            waveform = load_audio(path, sample_rate)
        except AudioError as error:
            bad.append((str(path), str(error)))
            continue
        waveforms.append(waveform)
        utterances.append(Utterance(str(Path(path).resolve()), waveform.shape[0] / sample_rate, ""))
    recognizer, labels, kept = self_adapt(loaded, utterances, waveforms, augment, config)
    confidences = [labels[i].confidence for i in kept]
    report = SelfAdaptationReport(
        recordings=len(waveforms),
        kept=len(kept),
        min_confidence=round(min(confidences), 4),
        mean_confidence_kept=round(sum(confidences) / len(confidences), 4),
        bad_files=bad,
    )
    metadata = dict(loaded.metadata)
    metadata[SELF_ADAPTATION_KEY] = {
        **{k: v for k, v in report.to_dict().items() if k != "bad_files"},
        "config": asdict(config),
        "adapted_from": str(model_path),
    }
    save_model(out_path, recognizer, loaded.tokenizer, metadata)
    return report
