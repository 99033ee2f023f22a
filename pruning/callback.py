"""Structured pruning as a Lightning callback: prune at scheduled epochs, fine-tune in between, export a
snapshot model at every requested sparsity.

Each event scores the units with the criterion, keeps the best per layer and direction, replaces the
encoder by a physically smaller one (:func:`pruning.structure.prune_encoder`) and rebuilds the optimizer
for the new parameters, with a fresh warm-up + cosine learning-rate cycle for the fine-tuning interval.
Fine-tuning therefore gets faster as the model shrinks.

Resuming: the pruned widths are in every checkpoint (the module rebuilds itself from them before the
weights load) and this callback's state (events done, original sizes, history) is saved with it, so an
interrupted run continues where it stopped; an event re-run after a crash makes the same choice (its
criterion is deterministic or seeded by the event index).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
import torch

from asr.checkpoint import save_model
from asr.models.lstm_ctc import count_parameters
from asr.schedule import optimizer_steps_per_epoch
from common.errors import SpeechpruneError
from common.fileio import write_json
from pruning.criteria import Criterion, PruningContext
from pruning.schedules import ScheduleConfig, pruning_events, total_epochs
from pruning.selection import keep_top_units
from pruning.structure import lstm_sparsity, prune_encoder, unit_groups
from pruning.vib import fold_unit_gates

SPARSITY_TOLERANCE = 1e-6


def snapshot_name(sparsity: float) -> str:
    return f"sparsity{round(sparsity * 100):02d}.pt"


class StructuredPruning(L.Callback):
    """Args:
    criterion: scores units (:mod:`pruning.criteria`).
    schedule: when and how far to prune (:mod:`pruning.schedules`).
    groups: unit-group prefixes to prune, e.g. ["lstm"] or ["lstm", "conv"].
    snapshot_dir: where snapshot models are written (``sparsityNN.pt`` + ``snapshots.json``).
    snapshot_sparsities: export the fine-tuned model when each of these sparsities is done.
    """

    def __init__(
        self,
        criterion: Criterion,
        schedule: ScheduleConfig,
        groups: list[str],
        snapshot_dir: str | Path,
        snapshot_sparsities: list[float] | None = None,
    ) -> None:
        self.criterion = criterion
        self.schedule = schedule
        self.events = pruning_events(schedule)
        self.group_prefixes = groups
        self.snapshot_dir = Path(snapshot_dir)
        self.snapshot_sparsities = list(snapshot_sparsities or [])
        self.events_done = 0
        self.original: dict[str, tuple[int, int]] | None = None
        self.history: list[dict[str, Any]] = []
        self.snapshots: list[dict[str, Any]] = []

    # ----------------------------------------------------------------- state in the checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "events_done": self.events_done,
            "original": {k: list(v) for k, v in (self.original or {}).items()},
            "history": self.history,
            "snapshots": self.snapshots,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.events_done = int(state_dict["events_done"])
        self.original = {k: (int(v[0]), int(v[1])) for k, v in state_dict["original"].items()} or None
        self.history = list(state_dict["history"])
        self.snapshots = list(state_dict["snapshots"])

    # ----------------------------------------------------------------- hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            raise SpeechpruneError(
                "structured pruning replaces layers during training and runs in one process; "
                "set trainer.devices=1 (train the unpruned model with DDP, prune on one device)"
            )
        if trainer.max_epochs is not None and trainer.max_epochs < total_epochs(self.schedule):
            raise SpeechpruneError(
                f"trainer.max_epochs={trainer.max_epochs} ends before the pruning schedule "
                f"({total_epochs(self.schedule)} epochs)"
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        encoder = pl_module.recognizer.encoder
        if self.original is None:
            self.original = unit_groups(encoder)
        unknown = [p for p in self.group_prefixes if not any(g.startswith(p + ".") for g in self.original)]
        if unknown:
            raise SpeechpruneError(f"prune.groups {unknown}: the encoder has no such layers")
        if pl_module.lr_cycle_steps is None:
            pl_module.lr_cycle_steps = self._cycle_steps(trainer, trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for index, event in enumerate(self.events):
            if event.epoch == trainer.current_epoch and index >= self.events_done:
                self._prune(trainer, pl_module, index, event.sparsity)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        next_epoch = trainer.current_epoch + 1
        level_done = next_epoch == trainer.max_epochs or any(e.epoch == next_epoch for e in self.events)
        sparsity = self.events[self.events_done - 1].sparsity if self.events_done else 0.0
        wanted = any(abs(sparsity - s) < SPARSITY_TOLERANCE for s in self.snapshot_sparsities)
        done = any(abs(sparsity - s["sparsity"]) < SPARSITY_TOLERANCE for s in self.snapshots)
        if level_done and wanted and not done and trainer.is_global_zero:
            self._export(trainer, pl_module, sparsity)

    # ----------------------------------------------------------------- work
    def _cycle_steps(self, trainer: L.Trainer, epoch: int) -> int:
        """Optimizer steps from ``epoch`` to the next event (or the end): one learning-rate cycle."""
        following = [e.epoch for e in self.events if e.epoch > epoch]
        end = following[0] if following else int(trainer.max_epochs or epoch + 1)
        return max(1, (end - epoch) * optimizer_steps_per_epoch(trainer))

    def _calibration(self, trainer: L.Trainer, pl_module: L.LightningModule) -> PruningContext:
        loader = trainer.datamodule.val_dataloader()
        batch = next(iter(loader))
        with torch.no_grad():
            features, lengths = pl_module.recognizer.features(
                batch.waveforms.to(pl_module.device), batch.waveform_lengths.to(pl_module.device)
            )
        return PruningContext(features=features, lengths=lengths)

    def _prune(self, trainer: L.Trainer, pl_module: L.LightningModule, index: int, sparsity: float) -> None:
        encoder = pl_module.recognizer.encoder
        context = self._calibration(trainer, pl_module) if self.criterion.needs_data else PruningContext()
        context.event = index
        was_training = encoder.training
        encoder.eval()  # scores from deterministic gates and no dropout
        scores = self.criterion.scores(encoder, context)
        encoder.train(was_training)
        groups = [g for g in self.original if any(g.startswith(p + ".") for p in self.group_prefixes)]
        plan = keep_top_units(encoder, scores, self.original, sparsity, groups)
        pl_module.recognizer.encoder = prune_encoder(encoder, plan)
        pl_module.lr_cycle_steps = self._cycle_steps(trainer, trainer.current_epoch)
        trainer.strategy.setup_optimizers(trainer)
        self.events_done = index + 1
        record = {
            "event": index,
            "epoch": trainer.current_epoch,
            "target_sparsity": sparsity,
            "lstm_sparsity": round(lstm_sparsity(pl_module.recognizer.encoder, self.original), 6),
            "widths": {k: v[1] for k, v in unit_groups(pl_module.recognizer.encoder).items()},
            "parameters": count_parameters(pl_module.recognizer.encoder),
        }
        self.history.append(record)
        if trainer.logger is not None:
            trainer.logger.log_metrics(
                {"prune_lstm_sparsity": record["lstm_sparsity"], "prune_parameters": record["parameters"]},
                step=trainer.global_step,
            )

    def _export(self, trainer: L.Trainer, pl_module: L.LightningModule, sparsity: float) -> None:
        recognizer = copy.deepcopy(pl_module.recognizer).cpu().eval()
        recognizer.encoder = fold_unit_gates(recognizer.encoder)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        entry = {
            "sparsity": sparsity,
            "lstm_sparsity": round(lstm_sparsity(recognizer.encoder, self.original), 6),
            "path": snapshot_name(sparsity),
            "epoch": trainer.current_epoch,
            "criterion": self.criterion.name,
            "parameters": count_parameters(recognizer.encoder),
            "widths": {k: v[1] for k, v in unit_groups(recognizer.encoder).items()},
            **metrics,
        }
        save_model(self.snapshot_dir / entry["path"], recognizer, pl_module.tokenizer, metadata=entry)
        self.snapshots.append(entry)
        write_json(self.snapshot_dir / "snapshots.json", self.snapshots)
