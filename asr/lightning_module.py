"""Lightning training of a CTC recognizer, with a hook through which pruning adds loss terms."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from asr.augment import AugmentConfig, SpectrumAugmenter
from asr.checkpoint import (
    CHECKPOINT_KEY,
    VALIDATION_ERRORS_KEY,
    LoadedModel,
    build_recognizer,
    load_model,
    model_description,
)
from asr.data.dataset import Batch
from asr.features import FeatureConfig
from asr.metrics import ErrorCounts, error_counts
from asr.models.lstm_ctc import EncoderConfig
from asr.recognizer import SpeechRecognizer
from asr.tokenizer import Tokenizer
from decoding.entropy import mean_frame_entropy
from decoding.greedy import greedy_decode

LossTerm = Callable[[torch.Tensor, torch.Tensor, Batch], torch.Tensor]
"""An extra loss: (log_probs (batch, frames, vocab), valid frame lengths, the batch) -> scalar, already
weighted. The batch is there for terms that need the input (distillation runs a teacher on it)."""
Measure = LossTerm
"""A quantity logged every validation (unweighted), with a loss term's signature."""


def output_entropy(log_probs: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The mean per-frame entropy of the outputs (Gao et al.'s measure), as a validation measure."""
    return mean_frame_entropy(log_probs, lengths)


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``final_lr_fraction`` x lr, stepped per batch.

    Unit gates (VIBNet) learn at ``gate_lr_multiplier`` x lr without weight decay: they start at 1 and must
    travel far within a short fine-tuning budget, and decay would pull every gate towards 0 alike.
    ``anneal_to_max_time``: a training job whose ``trainer.max_time`` cannot hold every epoch ends after
    the epochs that fit and anneals over them (:class:`asr.schedule.AnnealWithinMaxTime`); off, the cycle
    spans ``max_epochs`` and the timer cuts it wherever it is.
    """

    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_fraction: float = 0.05
    final_lr_fraction: float = 0.02
    gate_lr_multiplier: float = 10.0
    anneal_to_max_time: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.anneal_to_max_time, bool):
            raise ValueError(
                f"optim.anneal_to_max_time must be true or false, got {self.anneal_to_max_time!r}"
            )
        for name in ("lr", "weight_decay", "warmup_fraction", "final_lr_fraction", "gate_lr_multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"optim.{name} must be a number, got {value!r}")
        if self.lr < 0 or self.weight_decay < 0 or self.gate_lr_multiplier <= 0:
            raise ValueError(
                f"optim: lr and weight_decay must be >= 0 and gate_lr_multiplier > 0, got lr={self.lr}, "
                f"weight_decay={self.weight_decay}, gate_lr_multiplier={self.gate_lr_multiplier}"
            )
        if not (0 <= self.warmup_fraction < 1 and 0 <= self.final_lr_fraction <= 1):
            raise ValueError("optim: warmup_fraction must lie in [0, 1) and final_lr_fraction in [0, 1]")


class CTCModule(L.LightningModule):
    """CTC loss on a :class:`SpeechRecognizer`; greedy-decoded WER/CER (jiwer) every validation.

    ``loss_terms`` is the extension point for training-time regularizers (the entropy regularizer of
    decoder-aware pruning, VIBNet's KL term): each is added to the CTC loss and logged under its name.
    """

    def __init__(
        self,
        features: dict[str, Any],
        model: dict[str, Any],
        optim: dict[str, Any] | None = None,
        augment: dict[str, Any] | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer"])
        if tokenizer is None:
            raise ValueError("CTCModule needs a tokenizer (its model travels inside every checkpoint)")
        self.tokenizer = tokenizer
        self.recognizer = SpeechRecognizer(FeatureConfig(**features), EncoderConfig(**model))
        self.optim_config = OptimConfig(**(optim or {}))
        self.spectrum_augmenter = SpectrumAugmenter(AugmentConfig(**augment)) if augment else None
        self.loss_terms: dict[str, LossTerm] = {}
        # Optimizer steps one warm-up + cosine cycle spans; None = the whole fit. Pruning schedules set it
        # so that every prune -> fine-tune interval gets a cycle of its own.
        self.lr_cycle_steps: int | None = None
        self._validation_counts = ErrorCounts()
        # the last validation's word errors by kind (summed over DDP ranks), written into every checkpoint:
        # a checkpoint then says whether the model it holds still deletes most words (CTC's blank plateau)
        self.validation_errors: dict[str, int] | None = None
        # logged as val_<name> every validation: the output entropy, and what each regularizer optimizes
        self.validation_measures: dict[str, Measure] = {"entropy": output_entropy}
        self._validation_values: dict[str, list[torch.Tensor]] = {}

    @classmethod
    def from_model_file(
        cls, path: str | os.PathLike, optim: dict | None = None, augment: dict | None = None
    ) -> CTCModule:
        """Start training (fine-tuning, pruning) from a saved model file or checkpoint of any shape."""
        return cls.from_loaded(load_model(path), optim, augment)

    @classmethod
    def from_loaded(
        cls, loaded: LoadedModel, optim: dict | None = None, augment: dict | None = None
    ) -> CTCModule:
        """:meth:`from_model_file` for a model already loaded (its metadata read by the caller)."""
        module = cls(
            features=asdict(loaded.recognizer.features.config),
            model=loaded.recognizer.encoder.config.to_dict(),
            optim=optim,
            augment=augment,
            tokenizer=loaded.tokenizer,
        )
        module.recognizer.load_state_dict(loaded.recognizer.state_dict())
        return module

    def add_loss_term(self, name: str, term: LossTerm) -> None:
        """Register an extra training loss (e.g. λ x output entropy); logged as ``train_<name>``."""
        self.loss_terms[name] = term

    def add_validation_measure(self, name: str, measure: Measure) -> None:
        """Register a quantity averaged over every validation's batches and logged as ``val_<name>``."""
        self.validation_measures[name] = measure

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.recognizer(waveforms, lengths)

    def _encode(self, batch: Batch, augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        warp = None
        if augment and self.spectrum_augmenter is not None:
            warp = self.spectrum_augmenter.warp_factors(batch.waveforms.shape[0], batch.waveforms.device)
        features, lengths = self.recognizer.features(batch.waveforms, batch.waveform_lengths, warp)
        if augment and self.spectrum_augmenter is not None:
            features = self.spectrum_augmenter(features)
        return self.recognizer.encoder(features, lengths)

    def _ctc_loss(self, log_probs: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.ctc_loss(
            log_probs.transpose(0, 1),
            batch.targets,
            lengths,
            batch.target_lengths,
            blank=self.tokenizer.blank_id,
            reduction="mean",
            zero_infinity=True,
        )

    def training_step(self, batch: Batch, batch_index: int) -> torch.Tensor:
        log_probs, lengths = self._encode(batch, augment=True)
        ctc = self._ctc_loss(log_probs, lengths, batch)
        loss = ctc
        batch_size = len(batch.indices)
        for name, term in self.loss_terms.items():
            value = term(log_probs, lengths, batch)
            self.log(f"train_{name}", value, batch_size=batch_size)
            loss = loss + value
        self.log("train_ctc", ctc, prog_bar=True, batch_size=batch_size)
        self.log("train_loss", loss, batch_size=batch_size)
        return loss

    def validation_step(self, batch: Batch, batch_index: int) -> None:
        log_probs, lengths = self._encode(batch, augment=False)
        self.log(
            "val_loss",
            self._ctc_loss(log_probs, lengths, batch),
            batch_size=len(batch.indices),
            sync_dist=True,
        )
        hypotheses = [
            self.tokenizer.decode(ids) for ids in greedy_decode(log_probs, lengths, self.tokenizer.blank_id)
        ]
        references = [
            self.tokenizer.decode(t[:n].tolist())
            for t, n in zip(batch.targets, batch.target_lengths, strict=True)
        ]
        self._validation_counts += error_counts(references, hypotheses)
        for name, measure in self.validation_measures.items():
            self._validation_values.setdefault(name, []).append(measure(log_probs, lengths, batch).detach())

    def on_validation_epoch_end(self) -> None:
        word_fields = ("substitutions", "deletions", "insertions", "words")
        fields = (*word_fields, "char_errors", "chars")
        counts = torch.tensor(
            [getattr(self._validation_counts, name) for name in fields],
            dtype=torch.float64,
            device=self.device,
        )
        # exact WER across DDP ranks: the counts are summed, not the rates averaged
        summed = self.trainer.strategy.reduce(counts, reduce_op="sum").tolist()
        totals = ErrorCounts(**{name: int(value) for name, value in zip(fields, summed, strict=True)})
        # identical on every rank after the reduce above; sync_dist only satisfies Lightning's DDP check
        self.log("val_wer", totals.wer, prog_bar=True, sync_dist=True)
        self.log("val_cer", totals.cer, sync_dist=True)
        self.log("val_deleted", totals.deleted, sync_dist=True)
        if not self.trainer.sanity_checking:  # the sanity check's few batches describe no model state
            self.validation_errors = {name: getattr(totals, name) for name in word_fields}
        for name in self.validation_measures:
            values = self._validation_values.get(name)
            mean = torch.stack(values).mean() if values else torch.tensor(0.0)
            self.log(f"val_{name}", mean, sync_dist=True)
        self._validation_counts = ErrorCounts()
        self._validation_values = {}

    def configure_optimizers(self) -> dict:
        config = self.optim_config
        named = list(self.named_parameters())
        gates = [p for n, p in named if ".unit_gates." in n]
        groups = [{"params": [p for n, p in named if ".unit_gates." not in n]}]
        if gates:
            groups.append({"params": gates, "lr": config.lr * config.gate_lr_multiplier, "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        fit_steps = max(int(self.trainer.estimated_stepping_batches), 1)

        def factor(step: int) -> float:
            # read at every step: a pruning callback may change the cycle after the scheduler was built
            total = self.lr_cycle_steps or fit_steps
            warmup = max(int(total * config.warmup_fraction), 1)
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return config.final_lr_fraction + (1 - config.final_lr_fraction) * 0.5 * (
                1 + math.cos(math.pi * progress)
            )

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the live model description: after pruning, widths differ from the constructor's."""
        checkpoint[CHECKPOINT_KEY] = model_description(self.recognizer, self.tokenizer)
        checkpoint["lr_cycle_steps"] = self.lr_cycle_steps
        checkpoint[VALIDATION_ERRORS_KEY] = self.validation_errors

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Take the shapes the checkpoint was saved with before Lightning loads its weights.

        Lightning calls this before ``load_state_dict`` and before optimizers are built, so a run resumed
        after structured pruning continues with the pruned (smaller) layers and their optimizer state.
        """
        description = checkpoint.get(CHECKPOINT_KEY)
        if description is not None and description["encoder"] != self.recognizer.encoder.config.to_dict():
            self.recognizer = build_recognizer(description).to(self.device)
        self.lr_cycle_steps = checkpoint.get("lr_cycle_steps")
        self.validation_errors = checkpoint.get(VALIDATION_ERRORS_KEY)
