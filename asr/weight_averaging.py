"""Exponential moving average of the weights during training (Lightning's ``EMAWeightAveraging``).

The recognizer must generalise to voices it never heard, while validation holds the training speakers'
other recordings; averaging the weights over the last stretch of the anneal smooths the step-to-step noise
of small batches without asking validation which epoch to keep. Lightning's callback validates the
averaged weights, writes them as a checkpoint's ``state_dict`` (so ``model.pt``, ``speechprune evaluate``
and pruning from a checkpoint all see the average) and keeps the weights being trained under
``current_model_state``, from which a resumed fit continues.

On the digits recipe (leave-one-speaker-out, decay 0.998) it did not pay: the cosine anneal to a 2% floor
already leaves the last weights an average of a slow walk (docs/new_voices.md), so the recipe leaves it
off; it stays for schedules that end at a higher learning rate, or longer trainings.

Training only: a pruning fine-tune changes which weights exist (masks, surgery), and an average over
weights from before a mask would bring pruned units back, so prune and search configs refuse the section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.utilities import rank_zero_warn

from common.errors import SpeechpruneError
from common.fileio import atomic_open

# where Lightning's callback keeps, in a checkpoint, the weights being trained and the average's own state
CURRENT_WEIGHTS_KEY = "current_model_state"
AVERAGING_STATE_KEY = "averaging_state"
STARTING_WEIGHTS_TOLERATED = 0.01  # share of the initial weights left in the final average, at most


@dataclass(frozen=True)
class WeightAveragingConfig:
    """``decay``: the average's weight on its past each optimizer step; 1 / (1 - decay) steps is its memory
    (0.998: 500 steps, about three epochs of the digits recipe's 154 steps each)."""

    decay: float = 0.998

    def __post_init__(self) -> None:
        decay = self.decay
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not math.isfinite(decay):
            raise ValueError(f"weight_averaging.decay must be a number, got {decay!r}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight_averaging.decay must lie in (0, 1), got {decay}")


class MovingAverage(EMAWeightAveraging):
    """Lightning's EMA, updated after every optimizer step from the first one, that warns when the fit is
    too short for its decay.

    The average starts as a copy of the initial weights and keeps ``decay ** steps`` of them after
    ``steps`` updates; over the digits recipe's ~2,800 steps at 0.998 that is 0.4%, but over a quick run's
    few hundred it is most of the model, and the export would be a half-trained blend.
    """

    def __init__(self, config: WeightAveragingConfig) -> None:
        super().__init__(decay=config.decay)
        self.decay = config.decay

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        steps = int(trainer.estimated_stepping_batches)
        kept = self.decay**steps
        if kept > STARTING_WEIGHTS_TOLERATED:
            rank_zero_warn(
                f"weight_averaging: with decay {self.decay} the average still holds {100 * kept:.0f}% of the "
                f"starting weights after this fit's {steps} optimizer steps; lower the decay (its memory is "
                f"1 / (1 - decay) = {1 / (1 - self.decay):.0f} steps) or train longer"
            )


def write_trained_weights_checkpoint(averaged: Path, out: Path) -> Path:
    """A copy of an averaged fit's checkpoint whose weights are the ones being trained, not the average:
    what the same fit without averaging would have written (the average changes no step), so that one
    training measures what averaging adds. Refuses a checkpoint that holds no average."""
    try:
        checkpoint = torch.load(averaged, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for foreign or corrupt files
        raise SpeechpruneError(f"{averaged}: not a loadable checkpoint ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or CURRENT_WEIGHTS_KEY not in checkpoint:
        raise SpeechpruneError(f"{averaged}: no {CURRENT_WEIGHTS_KEY}: not written by a weight-averaged fit")
    checkpoint["state_dict"] = checkpoint.pop(CURRENT_WEIGHTS_KEY)
    checkpoint.pop(AVERAGING_STATE_KEY, None)
    with atomic_open(out, "wb") as handle:
        torch.save(checkpoint, handle)
    return out
