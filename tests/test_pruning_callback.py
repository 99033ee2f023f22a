"""The StructuredPruning callback at unit level: a tiny CTCModule and a stand-in for the trainer (the
attributes the callback reads), plus one short real Lightning fit. The full prune job is in
test_pruning_e2e."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from asr.checkpoint import load_model
from asr.models.lstm_ctc import count_parameters
from asr.tokenizer import train_tokenizer
from common.errors import SpeechpruneError
from pruning.callback import StructuredPruning
from pruning.criteria import MagnitudeCriterion
from pruning.schedules import ScheduleConfig
from tests.conftest import fit_tiny, tiny_batches, tiny_module

HIDDEN = 8
BATCHES_PER_EPOCH = 5
# events at epoch 0 (25%) and epoch 2 (50%), one fine-tuning epoch after the last: 3 epochs
SCHEDULE = ScheduleConfig(kind="iterative", target=0.5, step=0.25, epochs_between=2, final_epochs=1)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["zero one two three four five six seven eight nine"] * 5, "char")


@pytest.fixture
def module(tokenizer):
    torch.manual_seed(0)
    return tiny_module(tokenizer, lstm_hidden=[HIDDEN])


class FakeStrategy:
    def __init__(self) -> None:
        self.optimizer_setups = 0

    def setup_optimizers(self, trainer) -> None:
        self.optimizer_setups += 1


class FakeLogger:
    def __init__(self) -> None:
        self.logged: list[tuple[dict, int]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.logged.append((metrics, step))


def fake_trainer(**overrides) -> SimpleNamespace:
    """What StructuredPruning reads of a Lightning trainer, with a strategy and logger that record calls."""
    fields = {
        "world_size": 1,
        "max_epochs": 3,
        "current_epoch": 0,
        "global_step": 0,
        "num_training_batches": BATCHES_PER_EPOCH,
        "accumulate_grad_batches": 1,
        "strategy": FakeStrategy(),
        "logger": FakeLogger(),
        "callback_metrics": {"val_wer": torch.tensor(0.25), "train_loss": torch.tensor(3.0)},
        "is_global_zero": True,
        "datamodule": None,
    }
    return SimpleNamespace(**{**fields, **overrides})


def pruning_callback(tmp_path, snapshots=(0.25, 0.5), schedule=SCHEDULE, groups=("lstm",)):
    return StructuredPruning(
        MagnitudeCriterion(), schedule, list(groups), tmp_path / "snapshots", list(snapshots)
    )


def run_epoch(callback, trainer, module, epoch: int) -> None:
    trainer.current_epoch = epoch
    callback.on_train_epoch_start(trainer, module)
    trainer.global_step += BATCHES_PER_EPOCH
    callback.on_train_epoch_end(trainer, module)


def _gate_rows(weight: torch.Tensor, units: torch.Tensor, hidden: int) -> torch.Tensor:
    """Rows of ``units`` in each of an LSTM weight's four gate blocks (i, f, g, o)."""
    return weight.reshape(4, hidden, -1)[:, units].reshape(4 * len(units), -1)


def test_events_prune_at_their_epochs_to_the_scheduled_widths(tmp_path, module):
    callback, trainer = pruning_callback(tmp_path), fake_trainer()
    original_encoder = copy.deepcopy(module.recognizer.encoder)
    magnitudes = MagnitudeCriterion().scores(original_encoder, None)["lstm.0"]
    callback.setup(trainer, module, "fit")
    callback.on_train_start(trainer, module)
    assert callback.original == {"conv.0": (1, 8), "conv.1": (1, 8), "lstm.0": (2, HIDDEN)}
    assert module.lr_cycle_steps == 2 * BATCHES_PER_EPOCH  # epochs 0-1, up to the next event

    trainer.current_epoch = 0
    callback.on_train_epoch_start(trainer, module)
    encoder = module.recognizer.encoder
    assert encoder.config.lstm_hidden == [6] and encoder.config.conv_channels == [8, 8]
    assert trainer.strategy.optimizer_setups == 1 and callback.events_done == 1
    # MNP keeps each direction's 6 units of largest weight magnitude, their weights unchanged
    for direction in range(2):
        kept = magnitudes[direction].topk(6).indices.sort().values
        torch.testing.assert_close(
            encoder.lstm_parameter(0, "weight_ih_l0", direction),
            _gate_rows(original_encoder.lstm_parameter(0, "weight_ih_l0", direction), kept, HIDDEN),
        )
    assert callback.history == [
        {
            "event": 0,
            "epoch": 0,
            "target_sparsity": 0.25,
            "lstm_sparsity": 0.25,
            "widths": {"conv.0": 8, "conv.1": 8, "lstm.0": 6},
            "parameters": count_parameters(encoder),
        }
    ]
    assert count_parameters(encoder) < count_parameters(original_encoder)
    assert trainer.logger.logged == [
        ({"prune_lstm_sparsity": 0.25, "prune_parameters": count_parameters(encoder)}, 0)
    ]

    callback.on_train_epoch_start(trainer, module)  # the same epoch again (e.g. a restarted epoch)
    trainer.current_epoch = 1
    callback.on_train_epoch_start(trainer, module)  # no event at epoch 1
    assert module.recognizer.encoder is encoder and trainer.strategy.optimizer_setups == 1

    trainer.current_epoch, trainer.global_step = 2, 10
    callback.on_train_epoch_start(trainer, module)
    assert module.recognizer.encoder.config.lstm_hidden == [4]  # 50% of the original 8, not of 6
    assert [event["lstm_sparsity"] for event in callback.history] == [0.25, 0.5]
    assert module.lr_cycle_steps == 1 * BATCHES_PER_EPOCH  # the final fine-tuning epoch
    assert trainer.strategy.optimizer_setups == 2 and trainer.logger.logged[-1][1] == 10


def test_a_snapshot_is_exported_once_per_requested_sparsity_after_its_fine_tuning(tmp_path, module):
    callback, trainer = pruning_callback(tmp_path), fake_trainer()
    callback.setup(trainer, module, "fit")
    callback.on_train_start(trainer, module)
    folder = tmp_path / "snapshots"
    run_epoch(callback, trainer, module, 0)
    assert not folder.exists()  # 25% is still being fine-tuned in epoch 1
    run_epoch(callback, trainer, module, 1)
    assert sorted(p.name for p in folder.iterdir()) == ["snapshots.json", "sparsity25.pt"]
    at_25 = copy.deepcopy(module.recognizer.state_dict())
    run_epoch(callback, trainer, module, 2)
    written = (folder / "sparsity50.pt").stat().st_mtime_ns
    callback.on_train_epoch_end(trainer, module)  # the last epoch's end again: nothing new
    assert (folder / "sparsity50.pt").stat().st_mtime_ns == written

    entries = json.loads((folder / "snapshots.json").read_text())
    assert entries == callback.snapshots
    assert [(e["sparsity"], e["lstm_sparsity"], e["epoch"], e["path"]) for e in entries] == [
        (0.25, 0.25, 1, "sparsity25.pt"),
        (0.5, 0.5, 2, "sparsity50.pt"),
    ]
    assert [e["widths"]["lstm.0"] for e in entries] == [6, 4]
    assert all(e["criterion"] == "mnp" and e["val_wer"] == 0.25 and "train_loss" not in e for e in entries)
    small = load_model(folder / "sparsity25.pt")
    assert small.recognizer.encoder.config.lstm_hidden == [6]
    assert entries[0]["parameters"] == count_parameters(small.recognizer.encoder)
    for name, weight in small.recognizer.state_dict().items():
        torch.testing.assert_close(weight, at_25[name])
    final = load_model(folder / "sparsity50.pt").recognizer
    for name, weight in final.state_dict().items():
        torch.testing.assert_close(weight, module.recognizer.state_dict()[name])


def test_only_requested_sparsities_are_exported(tmp_path, module):
    callback, trainer = pruning_callback(tmp_path, snapshots=[0.5]), fake_trainer()
    callback.on_train_start(trainer, module)
    for epoch in range(3):
        run_epoch(callback, trainer, module, epoch)
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["snapshots.json", "sparsity50.pt"]
    assert [e["sparsity"] for e in callback.snapshots] == [0.5]


def test_state_round_trips_and_a_resumed_callback_continues_from_the_original_sizes(tmp_path, module):
    callback, trainer = pruning_callback(tmp_path), fake_trainer()
    callback.on_train_start(trainer, module)
    run_epoch(callback, trainer, module, 0)
    run_epoch(callback, trainer, module, 1)
    state = callback.state_dict()
    torch.save(state, tmp_path / "state.pt")  # as it travels inside a Lightning checkpoint
    saved = torch.load(tmp_path / "state.pt", weights_only=True)

    resumed = pruning_callback(tmp_path)
    resumed.load_state_dict(saved)
    assert resumed.events_done == 1
    assert resumed.original == callback.original == {"conv.0": (1, 8), "conv.1": (1, 8), "lstm.0": (2, 8)}
    assert resumed.history == callback.history and len(resumed.history) == 1
    assert resumed.snapshots == callback.snapshots and [s["sparsity"] for s in resumed.snapshots] == [0.25]
    assert resumed.state_dict() == state

    # the module as a checkpoint rebuilds it: already pruned to 6 units, its lr cycle restored
    module.lr_cycle_steps = 123
    trainer = fake_trainer(current_epoch=2)
    resumed.on_train_start(trainer, module)
    assert resumed.original["lstm.0"] == (2, 8) and module.lr_cycle_steps == 123
    trainer.current_epoch = 0
    resumed.on_train_epoch_start(trainer, module)  # event 0 is done: not repeated
    assert module.recognizer.encoder.config.lstm_hidden == [6]
    run_epoch(resumed, trainer, module, 2)
    assert module.recognizer.encoder.config.lstm_hidden == [4]
    assert [s["sparsity"] for s in resumed.snapshots] == [0.25, 0.5]


def test_a_fresh_state_dict_is_empty_and_loads_back_to_none():
    callback = StructuredPruning(MagnitudeCriterion(), SCHEDULE, ["lstm"], "unused")
    state = callback.state_dict()
    assert state == {"events_done": 0, "original": {}, "history": [], "snapshots": []}
    callback.events_done = 5
    callback.load_state_dict(state)
    assert callback.events_done == 0 and callback.original is None


def test_more_than_one_process_is_refused(tmp_path, module):
    with pytest.raises(SpeechpruneError, match="one process.*devices=1"):
        pruning_callback(tmp_path).setup(fake_trainer(world_size=2), module, "fit")


def test_a_trainer_shorter_than_the_schedule_is_refused(tmp_path, module):
    callback = pruning_callback(tmp_path)
    callback.setup(fake_trainer(max_epochs=3), module, "fit")  # exactly the schedule's length
    with pytest.raises(SpeechpruneError, match=r"max_epochs=2 ends before the pruning schedule \(3 epochs\)"):
        callback.setup(fake_trainer(max_epochs=2), module, "fit")


def test_unknown_groups_are_named(tmp_path, module):
    callback = pruning_callback(tmp_path, groups=("lstm", "gru"))
    with pytest.raises(SpeechpruneError, match=r"prune.groups \['gru'\]"):
        callback.on_train_start(fake_trainer(), module)


# --- one real fit --------------------------------------------------------------------------------------


def test_a_real_fit_prunes_and_trains_the_smaller_model(tmp_path, tokenizer, module):
    class Optimized(L.Callback):
        """Records, at each epoch's end, the widths and whether the optimizer holds exactly the module's
        (current) parameters."""

        def __init__(self) -> None:
            self.seen: list[tuple[int, bool]] = []

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
            self.seen.append(
                (
                    pl_module.recognizer.encoder.config.lstm_hidden[0],
                    optimized == {id(p) for p in pl_module.parameters()},
                )
            )

    callback, recorder = pruning_callback(tmp_path), Optimized()
    before = copy.deepcopy(module.recognizer.state_dict())
    fit_tiny(module, tiny_batches(tokenizer, 2), tmp_path, max_epochs=3, callbacks=[callback, recorder])
    assert recorder.seen == [(6, True), (6, True), (4, True)]
    assert [s["sparsity"] for s in callback.snapshots] == [0.25, 0.5]
    final = load_model(tmp_path / "snapshots" / "sparsity50.pt").recognizer
    assert final.encoder.config.lstm_hidden == [4]
    # trained after the events: the output bias (its shape is untouched by pruning) moved
    assert (final.state_dict()["encoder.head.bias"] - before["encoder.head.bias"]).abs().max() > 1e-3
