"""AnnealWithinMaxTime: a fit that max_time cannot hold ends after the whole epochs that fit, with the
learning rate at its floor, instead of being cut mid-anneal; a fit that does fit is left alone. Real
Lightning fits of a tiny module, timed by a timer whose clock advances a fixed time per batch."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Timer

from asr.lightning_module import OptimConfig
from asr.schedule import AnnealWithinMaxTime, epochs_that_fit
from asr.tokenizer import train_tokenizer
from tests.conftest import fit_tiny, tiny_batches, tiny_module

BATCHES_PER_EPOCH = 2
SECONDS_PER_BATCH = 10.0  # an epoch takes 20 s on the simulated clock
LR, FINAL_FRACTION = 0.01, 0.02


class SteppedTimer(Timer):
    """Lightning's timer (it stops the fit at its duration) on a clock that advances per training batch."""

    def __init__(self, duration_seconds: float) -> None:
        super().__init__(duration={"seconds": duration_seconds}, verbose=False)
        self.batches = 0

    def time_elapsed(self, stage: str = "train") -> float:
        return self._offset + self.batches * SECONDS_PER_BATCH

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        self.batches += 1
        super().on_train_batch_end(trainer, *args, **kwargs)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["zero one two three four five six seven eight nine"] * 5, "char")


def fit(tokenizer, budget_seconds, max_epochs, planner, tmp_path, ckpt_path=None, module=None):
    torch.manual_seed(0)
    module = module or tiny_module(tokenizer)
    module.optim_config.lr, module.optim_config.final_lr_fraction = LR, FINAL_FRACTION
    callbacks = [SteppedTimer(budget_seconds), *([AnnealWithinMaxTime()] if planner else [])]
    batches = tiny_batches(tokenizer, BATCHES_PER_EPOCH)
    trainer = fit_tiny(module, batches, tmp_path, ckpt_path, max_epochs=max_epochs, callbacks=callbacks)
    return trainer, module


def learning_rate(trainer) -> float:
    return trainer.optimizers[0].param_groups[0]["lr"]


@pytest.mark.parametrize(
    ("elapsed", "remaining", "done", "cap", "expected"),
    [
        (20.0, 55.0, 1, 10, 3),  # 20 s an epoch, 55 s left: two more whole epochs
        (60.0, 15.0, 3, 10, 3),  # no whole epoch left: stop after this one
        (20.0, 1000.0, 1, 10, 10),  # the budget holds them all: never above the configured epochs
        (90.0, -5.0, 3, 10, 3),  # already over (a slow last epoch): never below the epochs done
        (0.0, 75.0, 0, 10, 10),  # nothing measured yet: the configured epochs
    ],
)
def test_epochs_that_fit(elapsed, remaining, done, cap, expected):
    assert epochs_that_fit(elapsed, remaining, done, cap) == expected


def test_a_budget_short_of_the_epochs_ends_the_fit_annealed_after_the_epochs_that_fit(tmp_path, tokenizer):
    # 75 s hold 3.75 epochs of the 10 configured
    planned, module = fit(tokenizer, 75.0, 10, planner=True, tmp_path=tmp_path)
    assert planned.current_epoch == 3 and planned.global_step == 3 * BATCHES_PER_EPOCH
    assert module.lr_cycle_steps == 3 * BATCHES_PER_EPOCH
    assert learning_rate(planned) == pytest.approx(LR * FINAL_FRACTION)
    # without it the timer cuts the fit 0.8 s into epoch 4 with the schedule at 8 / 20 steps
    cut, _ = fit(tokenizer, 75.0, 10, planner=False, tmp_path=tmp_path)
    assert cut.global_step == 8
    assert learning_rate(cut) > 20 * LR * FINAL_FRACTION


def test_a_budget_that_holds_every_epoch_changes_nothing(tmp_path, tokenizer):
    planned, planned_module = fit(tokenizer, 1000.0, 3, planner=True, tmp_path=tmp_path)
    plain, plain_module = fit(tokenizer, 1000.0, 3, planner=False, tmp_path=tmp_path)
    assert planned.current_epoch == plain.current_epoch == 3
    assert planned_module.lr_cycle_steps is None
    assert learning_rate(planned) == learning_rate(plain) == pytest.approx(LR * FINAL_FRACTION)
    for name, value in planned_module.state_dict().items():
        assert torch.equal(value, plain_module.state_dict()[name]), name


def test_a_resumed_fit_plans_from_the_time_already_spent(tmp_path, tokenizer):
    # two epochs (40 s) of a 75 s budget, checkpointed; the resumed fit is allowed 10 but has time for 1 more
    first, module = fit(tokenizer, 75.0, 2, planner=True, tmp_path=tmp_path)
    checkpoint = tmp_path / "two_epochs.ckpt"
    first.save_checkpoint(checkpoint)
    resumed, resumed_module = fit(tokenizer, 75.0, 10, planner=True, tmp_path=tmp_path, ckpt_path=checkpoint)
    assert resumed.current_epoch == 3
    assert resumed_module.lr_cycle_steps == 3 * BATCHES_PER_EPOCH
    assert learning_rate(resumed) == pytest.approx(LR * FINAL_FRACTION)


def test_the_switch_takes_only_true_or_false():
    with pytest.raises(ValueError, match="optim.anneal_to_max_time"):
        OptimConfig(anneal_to_max_time="yes")
