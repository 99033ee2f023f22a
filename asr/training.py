"""Run a training job from a config: seed, data, model, Lightning trainer, checkpoints, resume, export."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from asr.augment import AugmentConfig
from asr.checkpoint import VALIDATION_ERRORS_KEY, load_model, save_model
from asr.config import build_section, check_keys
from asr.data.datamodule import DataConfig, SpeechDataModule
from asr.data.fingerprint import audio_fingerprint
from asr.features import FeatureConfig
from asr.lightning_module import CTCModule, OptimConfig
from asr.models.lstm_ctc import EncoderConfig, count_parameters
from asr.schedule import AnnealWithinMaxTime
from asr.tokenizer import Tokenizer
from asr.weight_averaging import MovingAverage, WeightAveragingConfig
from common.errors import SpeechpruneError, Terminated
from common.fileio import write_json
from common.signals import lightning_handles_sigterm

EXPORTED_MODEL_NAME = "model.pt"
RUN_SECTIONS = ("seed", "threads", "data", "augment", "optim", "trainer")  # read by every training-like job
# weight_averaging is training's alone: an average over weights from before a pruning mask would undo it
TRAIN_SECTIONS = (*RUN_SECTIONS, "tokenizer", "features", "model", "export_checkpoint", "weight_averaging")
# which checkpoint becomes model.pt: "best" (lowest validation WER) or "last" (the end of training)
EXPORT_CHOICES = ("best", "last")


@dataclass
class RunSections:
    """The config sections every training-like job (train, prune, search fine-tuning) reads alike."""

    optim: OptimConfig
    augment: AugmentConfig | None
    data: DataConfig

    def module_options(self) -> dict[str, Any]:
        """``optim`` and ``augment`` as the plain dicts :class:`CTCModule` takes (and checkpoints)."""
        return {"optim": asdict(self.optim), "augment": asdict(self.augment) if self.augment else None}


def start_run(config: dict[str, Any]) -> RunSections:
    """Seed everything, set torch's threads, and read the ``optim``, ``augment`` and ``data`` sections."""
    L.seed_everything(int(config.get("seed", 0)), workers=True, verbose=False)
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    augment = build_section(config, "augment", AugmentConfig) if config.get("augment") is not None else None
    return RunSections(
        optim=build_section(config, "optim", OptimConfig),
        augment=augment,
        data=build_section(config, "data", DataConfig),
    )


def build_trainer(
    config: dict[str, Any], exp_dir: Path, callbacks: list[L.Callback], **overrides: Any
) -> L.Trainer:
    """A Lightning trainer logging to ``exp_dir/logs`` (CSV) with the config's ``trainer`` section."""
    options = {**(config.get("trainer") or {}), **overrides}
    try:
        return L.Trainer(
            default_root_dir=exp_dir,
            logger=CSVLogger(exp_dir, name="logs"),
            callbacks=[*callbacks, LearningRateMonitor("step")],
            use_distributed_sampler=False,  # the bucket sampler shards batches across ranks itself
            **options,
        )
    except (TypeError, ValueError) as error:  # an unknown or mistyped lightning.Trainer option
        raise SpeechpruneError(f"config section 'trainer': {error}") from None


def latest_checkpoint(exp_dir: Path) -> ModelCheckpoint:
    """``checkpoints/last.ckpt`` rewritten after every epoch, whatever the monitored metric did.

    Lightning's ``save_last=True`` writes last.ckpt only when a top-k checkpoint was saved in the same
    step, so epochs that do not improve validation WER would be lost to a kill; this callback has no
    monitor, so its single kept checkpoint is always the latest.
    """
    return ModelCheckpoint(
        dirpath=exp_dir / "checkpoints", filename="last", save_top_k=1, enable_version_counter=False
    )


class CheckpointOnSigterm(L.Callback):
    """Writes ``last.ckpt`` when Lightning stops a fit for SIGTERM (at a step boundary, so the state is
    whole): a preempted job resumes from the step it reached, not from the last epoch's end."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)


def fit_resuming(
    trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, exp_dir: Path
) -> str | None:
    """``trainer.fit``, resuming from ``exp_dir/checkpoints/last.ckpt`` when an earlier run left one.

    SIGTERM (a scheduler's preemption) saves last.ckpt and raises :class:`Terminated`: the job exits
    non-zero and the same command resumes it."""
    last = exp_dir / "checkpoints" / "last.ckpt"
    resume_from = str(last) if last.is_file() else None
    trainer.callbacks.append(CheckpointOnSigterm(last))
    try:
        with lightning_handles_sigterm():
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    except SIGTERMException:
        raise Terminated(f"stopped by SIGTERM at step {trainer.global_step}; {last} saved") from None
    return resume_from


def build_training(config: dict[str, Any]) -> tuple[CTCModule, SpeechDataModule]:
    """The untrained module and the data of a train config (seeded, threads set), as ``train`` fits them;
    also what ``bench/train_threads.py`` times."""
    check_keys(config, TRAIN_SECTIONS, "train config")
    sections = start_run(config)
    tokenizer = Tokenizer.load(config.get("tokenizer", {}).get("path", ""))
    features = build_section(config, "features", FeatureConfig)
    encoder = build_section(
        config, "model", EncoderConfig, input_dim=features.n_mels, vocab_size=tokenizer.vocab_size
    )
    module = CTCModule(
        features=asdict(features), model=encoder.to_dict(), tokenizer=tokenizer, **sections.module_options()
    )
    return module, SpeechDataModule(sections.data, tokenizer, features.sample_rate, sections.augment)


def export_choice(config: dict[str, Any]) -> str:
    """The config's ``export_checkpoint``, refused before any work when it is neither choice.

    "best" keeps the epoch with the lowest validation WER; but validation holds the training speakers'
    other recordings, where checkpoints late in training differ by two or three utterances, while the end
    of the anneal ("last") generalises better to speakers never heard (docs/new_voices.md)."""
    choice = config.get("export_checkpoint", "best")
    if choice not in EXPORT_CHOICES:
        raise SpeechpruneError(f"export_checkpoint: expected one of {list(EXPORT_CHOICES)}, got {choice!r}")
    return choice


def weight_averaging(config: dict[str, Any]) -> WeightAveragingConfig | None:
    """The config's ``weight_averaging`` section (absent or null: off), refused before any work when bad."""
    if config.get("weight_averaging") is None:
        return None
    return build_section(config, "weight_averaging", WeightAveragingConfig)


def train(config: dict[str, Any], exp_dir: str | Path) -> Path:
    """Train (resuming from ``exp_dir/checkpoints/last.ckpt`` when present) and export the checkpoint
    ``export_checkpoint`` names (default: the best on validation). With ``weight_averaging`` every
    checkpoint, and so the export, holds the moving average of the weights (:mod:`asr.weight_averaging`).

    Returns the path of the exported compact model file.
    """
    exp_dir = Path(exp_dir)
    export = export_choice(config)
    averaging = weight_averaging(config)
    module, datamodule = build_training(config)
    checkpoints = ModelCheckpoint(
        dirpath=exp_dir / "checkpoints",
        filename="epoch{epoch:03d}-wer{val_wer:.4f}",
        auto_insert_metric_name=False,
        monitor="val_wer",
        mode="min",
        save_top_k=1,
    )
    callbacks: list[L.Callback] = [checkpoints, latest_checkpoint(exp_dir)]
    budget = AnnealWithinMaxTime() if module.optim_config.anneal_to_max_time else None
    if budget is not None:
        callbacks.append(budget)
    if averaging is not None:
        callbacks.append(MovingAverage(averaging))
    trainer = build_trainer(config, exp_dir, callbacks)
    started = time.perf_counter()
    resume_from = fit_resuming(trainer, module, datamodule, exp_dir)
    elapsed = time.perf_counter() - started

    exported = exp_dir / EXPORTED_MODEL_NAME
    if trainer.is_global_zero:
        last = str((exp_dir / "checkpoints" / "last.ckpt").resolve())  # absolute, as Lightning's best is
        best = checkpoints.best_model_path or last
        chosen = best if export == "best" else last
        loaded = load_model(chosen)
        summary = {
            "exported_checkpoint": chosen,
            "export_checkpoint": export,
            "weight_averaging_decay": averaging.decay if averaging else None,
            "best_checkpoint": best,
            "best_val_wer": float(checkpoints.best_model_score)
            if checkpoints.best_model_score is not None
            else None,
            # the exported weights' own validation errors by kind: what asr.metrics.blank_plateau reads
            "exported_val_errors": loaded.metadata.get(VALIDATION_ERRORS_KEY),
            "epochs_completed": trainer.current_epoch,
            # set where trainer.max_time could not hold max_epochs and the fit annealed over fewer
            "epochs_planned_for_max_time": budget.planned if budget else None,
            "train_seconds_this_run": round(elapsed, 1),
            "resumed_from": resume_from,
            "parameters": count_parameters(loaded.recognizer.encoder),
            # the audio it learned from: runs on two machines trained alike only where these agree
            "train_audio_sha256": audio_fingerprint(datamodule.train_utterances),
            "valid_audio_sha256": audio_fingerprint(datamodule.valid_utterances),
        }
        save_model(exported, loaded.recognizer, loaded.tokenizer, metadata=summary)
        # also inside model.pt; this copy is for LMs
        loaded.tokenizer.save(exp_dir / "tokenizer.model")
        write_json(exp_dir / "train_summary.json", summary)
    return exported
