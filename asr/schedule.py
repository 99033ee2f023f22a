"""Fitting the learning-rate schedule to the optimizer steps a fit will really take.

A recipe's budget is wall-clock (``trainer.max_time``) while its cosine schedule is laid out in epochs
(``trainer.max_epochs``). On a machine slower than the one the recipe was tuned on, Lightning's timer stops
the fit mid-epoch with the learning rate still high: the model is cut off before its anneal, and the
checkpoint exported is the best of high-learning-rate ones (at half the recipe's budget, half a cosine:
0.53 x the peak at the cut, README). Budgeted-training results
(Li, Yumer & Ramanan, ICLR 2020) say the schedule should instead decay to its floor at the budget.
:class:`AnnealWithinMaxTime` does that in whole epochs: it plans the epochs that fit, ends the fit after
the last of them, and lays the one warm-up + cosine cycle over them.
"""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.utilities import rank_zero_info


def optimizer_steps_per_epoch(trainer: L.Trainer) -> int:
    """Optimizer steps one epoch takes, counted as Lightning's ``estimated_stepping_batches`` counts them
    (an epoch's last, partial accumulation steps too; 1 for an unsized loader)."""
    batches = trainer.num_training_batches
    per_epoch = int(batches) if batches != float("inf") else 1
    return max(1, math.ceil(per_epoch / max(1, trainer.accumulate_grad_batches)))


def epochs_that_fit(elapsed: float, remaining: float, epochs_done: int, max_epochs: int) -> int:
    """The epochs a fit can finish: those done plus whole ones at the mean pace so far, at most
    ``max_epochs``, at least those done. The mean includes validation and the first epoch's start-up, so
    it errs on the slow side, and the timer still stops the fit if an epoch overruns."""
    if epochs_done <= 0 or elapsed <= 0:
        return max_epochs
    more = math.floor(max(remaining, 0.0) / (elapsed / epochs_done))
    return max(epochs_done, min(max_epochs, epochs_done + more))


class AnnealWithinMaxTime(L.Callback):
    """Shortens a fit that ``trainer.max_time`` would cut to the whole epochs that fit, annealing over them.

    After every epoch (and on resuming) it re-plans from the timer: the fit's last epoch becomes the
    planned one (``fit_loop.max_epochs``, never above the configured one) and the module's
    ``lr_cycle_steps`` spans the planned epochs, so the learning rate reaches its floor as the budget
    ends. Where every configured epoch fits it changes nothing. Inactive without ``max_time``.
    """

    def __init__(self) -> None:
        self.max_epochs: int | None = None
        self.planned: int | None = None  # epochs the last plan allows, when fewer than max_epochs

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.max_epochs is None:
            self.max_epochs = trainer.max_epochs
        if trainer.current_epoch > 0:  # resumed: the timer carries the earlier runs' time
            self._plan(trainer, pl_module, trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._plan(trainer, pl_module, trainer.current_epoch + 1)

    def _plan(self, trainer: L.Trainer, pl_module: L.LightningModule, epochs_done: int) -> None:
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        remaining = timer.time_remaining() if timer is not None else None
        if remaining is None or self.max_epochs is None or self.max_epochs < 0:
            return
        elapsed = timer.time_elapsed()
        planned = epochs_that_fit(elapsed, remaining, epochs_done, self.max_epochs)
        planned = trainer.strategy.broadcast(planned, src=0)  # every rank stops after the same epoch
        if planned == self.max_epochs and self.planned is None:
            return
        if planned != self.planned:
            rank_zero_info(
                f"trainer.max_time holds {planned} of {self.max_epochs} epochs at "
                f"{elapsed / epochs_done:.0f} s each: the learning rate anneals over {planned}"
            )
        self.planned = planned
        trainer.fit_loop.max_epochs = planned
        pl_module.lr_cycle_steps = planned * optimizer_steps_per_epoch(trainer)
