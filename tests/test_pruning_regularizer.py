"""The entropy regularizer's lambda warm-up and its wiring into CTCModule's training loss."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from asr.data.dataset import Batch
from asr.tokenizer import train_tokenizer
from decoding.entropy import mean_frame_entropy
from pruning.regularizers import SharpnessRegularizer, SharpnessRegularizerConfig, nonblank_entropy, tail_mass
from tests.conftest import tiny_module

TEXTS = ["one two", "three", "four five six"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["zero one two three four five six seven eight nine"] * 5, "char")


def _batch(tokenizer) -> Batch:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([4000, 3200, 2400])
    waveforms = 0.1 * torch.randn(3, 4000, generator=generator)
    for row, length in enumerate(lengths.tolist()):
        waveforms[row, length:] = 0.0
    ids = [tokenizer.encode(text) for text in TEXTS]
    targets = torch.zeros(3, max(map(len, ids)), dtype=torch.long)
    for row, units in enumerate(ids):
        targets[row, : len(units)] = torch.tensor(units)
    return Batch(waveforms, lengths, targets, torch.tensor([len(u) for u in ids]), [0, 1, 2])


def _emissions(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.randn(2, 7, 5, generator=torch.Generator().manual_seed(seed))
    return logits.log_softmax(-1), torch.tensor([7, 4])


def test_weight_ramps_linearly_over_the_warmup_steps():
    regularizer = SharpnessRegularizer(SharpnessRegularizerConfig(weight=2.0, warmup_steps=4))
    assert [regularizer.weight_at(step) for step in range(6)] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 2.0])
    assert regularizer.weight_at(1000) == 2.0
    assert SharpnessRegularizer(SharpnessRegularizerConfig(weight=0.3)).weight_at(0) == 0.3
    assert SharpnessRegularizer(SharpnessRegularizerConfig(weight=0.0, warmup_steps=3)).weight_at(5) == 0.0


@pytest.mark.parametrize(
    "kind,measure",
    [
        ("frame_entropy", mean_frame_entropy),
        ("nonblank_entropy", lambda lp, n: nonblank_entropy(lp, n, blank_id=2)),
        ("tail_mass", lambda lp, n: tail_mass(lp, n, top_k=2)),
    ],
)
def test_loss_is_the_weight_at_the_trainers_step_times_the_measure(kind, measure):
    config = SharpnessRegularizerConfig(weight=1.5, warmup_steps=10, kind=kind, top_k=2, blank_id=2)
    regularizer = SharpnessRegularizer(config)
    log_probs, lengths = _emissions()
    expected = float(measure(log_probs, lengths))
    assert expected > 0.05
    # without a trainer the step is 0
    assert float(regularizer.loss(log_probs, lengths)) == pytest.approx(0.15 * expected)
    trainer = SimpleNamespace(global_step=3)
    regularizer._trainer = trainer
    assert float(regularizer.loss(log_probs, lengths)) == pytest.approx(0.6 * expected)
    trainer.global_step = 25
    assert float(regularizer.loss(log_probs, lengths)) == pytest.approx(1.5 * expected)


def test_loss_is_differentiable_and_lowering_it_sharpens_the_output():
    regularizer = SharpnessRegularizer(SharpnessRegularizerConfig(weight=1.0))
    logits = torch.randn(2, 7, 5, generator=torch.Generator().manual_seed(2), requires_grad=True)
    lengths = torch.tensor([7, 4])
    before = float(mean_frame_entropy(logits.detach().log_softmax(-1), lengths))
    optimizer = torch.optim.SGD([logits], lr=5.0)
    for _ in range(20):
        optimizer.zero_grad()
        regularizer.loss(logits.log_softmax(-1), lengths).backward()
        optimizer.step()
    assert float(mean_frame_entropy(logits.detach().log_softmax(-1), lengths)) < 0.5 * before


def _logged_training_step(module, batch) -> tuple[torch.Tensor, dict[str, float]]:
    logged: dict[str, float] = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    with torch.no_grad():
        loss = module.training_step(batch, 0)
    return loss, logged


def test_setup_registers_the_term_and_training_step_adds_it_to_the_ctc_loss(tokenizer):
    torch.manual_seed(0)
    module = tiny_module(tokenizer, lstm_hidden=[16]).train()
    batch = _batch(tokenizer)
    plain_loss, plain = _logged_training_step(module, batch)
    assert set(plain) == {"train_ctc", "train_loss"} and plain["train_loss"] == plain["train_ctc"]
    with torch.no_grad():
        log_probs, lengths = module.recognizer.encoder(
            *module.recognizer.features(batch.waveforms, batch.waveform_lengths)
        )
    entropy = float(mean_frame_entropy(log_probs, lengths))
    assert 0.1 < entropy <= math.log(tokenizer.vocab_size)

    regularizer = SharpnessRegularizer(SharpnessRegularizerConfig(weight=2.0, warmup_steps=4))
    trainer = SimpleNamespace(global_step=1)
    regularizer.setup(trainer, module, "fit")
    assert list(module.loss_terms) == ["frame_entropy_weighted"]
    assert module.loss_terms["frame_entropy_weighted"] == regularizer.loss

    loss, logged = _logged_training_step(module, batch)
    assert logged["train_ctc"] == pytest.approx(plain["train_ctc"], rel=1e-5)
    assert logged["train_frame_entropy"] == pytest.approx(entropy, rel=1e-4)  # unweighted
    assert logged["train_frame_entropy_weighted"] == pytest.approx(1.0 * entropy, rel=1e-4)  # 2.0 x 2/4
    assert float(loss) == pytest.approx(float(plain_loss) + 1.0 * entropy, rel=1e-5)
    assert logged["train_loss"] == pytest.approx(float(loss))

    trainer.global_step = 10  # past the warm-up: the full weight
    loss, logged = _logged_training_step(module, batch)
    assert float(loss) == pytest.approx(float(plain_loss) + 2.0 * entropy, rel=1e-5)


def test_a_zero_weight_still_logs_the_measure_but_leaves_the_loss(tokenizer):
    torch.manual_seed(0)
    module = tiny_module(tokenizer, lstm_hidden=[16]).train()
    batch = _batch(tokenizer)
    plain_loss, _ = _logged_training_step(module, batch)
    SharpnessRegularizer(SharpnessRegularizerConfig(kind="tail_mass")).setup(
        SimpleNamespace(global_step=0), module, "fit"
    )
    loss, logged = _logged_training_step(module, batch)
    assert float(loss) == pytest.approx(float(plain_loss), rel=1e-6)
    assert logged["train_tail_mass"] > 0.05 and logged["train_tail_mass_weighted"] == 0.0
