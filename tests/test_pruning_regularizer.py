"""The entropy regularizer's lambda warm-up and its wiring into CTCModule's training loss."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from asr.data.dataset import Batch
from asr.tokenizer import train_tokenizer
from decoding.entropy import mean_frame_entropy
from pruning.regularizers import (
    SharpnessRegularizer,
    SharpnessRegularizerConfig,
    distillation_kl,
    nonblank_entropy,
    nonblank_margin,
    sharpness_measure,
    soft_nonblank_entropy,
    tail_mass,
)
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
        ("soft_nonblank_entropy", lambda lp, n: soft_nonblank_entropy(lp, n, blank_id=2)),
        ("margin", lambda lp, n: nonblank_margin(lp, n, blank_id=2, margin=3.0)),
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


def test_soft_nonblank_entropy_weights_frames_by_their_nonblank_mass():
    log_probs, lengths = _emissions(seed=3)
    weights = (1 - log_probs[..., 2].exp()) * torch.tensor([[1.0] * 7, [1.0] * 4 + [0.0] * 3])
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    expected = float((weights * entropy).sum() / weights.sum())
    assert float(soft_nonblank_entropy(log_probs, lengths, blank_id=2)) == pytest.approx(expected, rel=1e-6)
    # making a frame's argmax the blank (the hard variant's loophole) leaves its weight near where it was
    sure_blank = torch.full((1, 3, 5), -20.0)
    sure_blank[..., 2] = 0.0
    assert float(soft_nonblank_entropy(sure_blank.log_softmax(-1), torch.tensor([3]), blank_id=2)) < 1e-6


def test_the_margin_term_is_a_hinge_on_the_two_best_nonblank_tokens():
    frame = torch.tensor([[[math.log(0.5), math.log(0.3), math.log(0.15), math.log(0.05)]]])  # blank = 0
    gap = math.log(0.3) - math.log(0.15)
    assert float(nonblank_margin(frame, torch.tensor([1]), blank_id=0, margin=3.0)) == pytest.approx(
        3.0 - gap
    )
    assert float(nonblank_margin(frame, torch.tensor([1]), blank_id=0, margin=0.5)) == 0.0


def test_distillation_is_zero_when_the_student_is_the_teacher_and_positive_otherwise():
    student, lengths = _emissions(seed=4)
    assert float(distillation_kl(student, student.clone(), lengths)) == pytest.approx(0.0, abs=1e-7)
    teacher, _ = _emissions(seed=5)
    assert float(distillation_kl(student, teacher, lengths)) > 0.05
    with pytest.raises(ValueError, match="frame rate"):
        distillation_kl(student, teacher[:, :5], lengths)


def _finetuned_measure(tiny_corpus, model_in, out, kind: str, weight: float, teacher=None) -> float:
    """Fine-tune ``model_in`` 30 batches with the ``kind`` term at ``weight``; the term's unweighted
    measure on the validation set afterwards."""
    from asr.checkpoint import load_model
    from asr.inference import encode_each, load_evaluation_audio, stack_emissions
    from speechprune.search.finetune import FineTuner
    from tests.conftest import tiny_config

    config = tiny_config(tiny_corpus, epochs=1)
    for section in ("tokenizer", "features", "model"):
        del config[section]
    config["trainer"] = {"accelerator": "cpu", "enable_progress_bar": False}
    config["optim"] = {"lr": 0.003, "warmup_fraction": 0.1}
    config["regularizer"] = {"kind": kind, "weight": weight, "margin": 3.0}
    loaded = load_model(model_in)
    FineTuner(config, loaded.tokenizer, 8000, teacher=teacher)(model_in, out, 30, seed=7)
    tuned = load_model(out)
    audio = load_evaluation_audio(tiny_corpus["valid"], 8000)
    log_probs, lengths = stack_emissions(encode_each(tuned.recognizer, audio.waveforms))
    blank = tuned.tokenizer.blank_id
    config = SharpnessRegularizerConfig(kind=kind, blank_id=blank, teacher=str(teacher) if teacher else None)
    if kind == "distillation":
        teacher_log_probs, _ = stack_emissions(encode_each(load_model(teacher).recognizer, audio.waveforms))
        return float(distillation_kl(log_probs, teacher_log_probs, lengths))
    return float(sharpness_measure(config)(log_probs, lengths, None))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["soft_nonblank_entropy", "margin", "distillation"])
def test_each_new_term_lowers_its_own_measure_on_a_tiny_run(kind, tiny_corpus, base_model, tmp_path):
    """A pruned student fine-tuned with the term ends with a lower measure than with lambda = 0."""
    from asr.checkpoint import load_model, save_model
    from pruning.criteria import PruningContext, make_criterion
    from pruning.selection import keep_top_units
    from pruning.structure import prune_encoder, unit_groups

    loaded = load_model(base_model)
    encoder = loaded.recognizer.encoder
    scores = make_criterion("mnp").scores(encoder, PruningContext())
    plan = keep_top_units(encoder, scores, unit_groups(encoder), 0.5, ["lstm.0"])
    loaded.recognizer.encoder = prune_encoder(encoder, plan)
    student = tmp_path / "student.pt"
    save_model(student, loaded.recognizer, loaded.tokenizer)
    teacher = base_model if kind == "distillation" else None
    weight = {"soft_nonblank_entropy": 2.0, "margin": 1.0, "distillation": 2.0}[kind]
    vanilla = _finetuned_measure(tiny_corpus, student, tmp_path / "vanilla.pt", kind, 0.0, teacher)
    regularized = _finetuned_measure(tiny_corpus, student, tmp_path / "reg.pt", kind, weight, teacher)
    assert regularized < vanilla, (kind, vanilla, regularized)
