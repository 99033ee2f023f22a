"""Structured surgery, criteria, selection, schedules, VIB gates and the output-sharpness regularizers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from asr.checkpoint import load_model, save_model
from asr.features import FeatureConfig
from asr.models.lstm_ctc import EncoderConfig, LSTMCTCEncoder
from asr.recognizer import SpeechRecognizer
from asr.tokenizer import train_tokenizer
from decoding.entropy import mean_frame_entropy
from pruning.cost import encoder_macs_per_second
from pruning.criteria import PruningContext, make_criterion
from pruning.regularizers import SharpnessRegularizerConfig, nonblank_entropy, sharpness_measure, tail_mass
from pruning.schedules import ScheduleConfig, pruning_events, sparsity_steps, total_epochs
from pruning.selection import keep_top_units
from pruning.structure import lstm_sparsity, mask_encoder, prune_encoder, unit_groups
from pruning.vib import VIBKLTerm, add_unit_gates, fold_unit_gates, gates_of


def make_encoder(
    bidirectional: bool = True, convs=(4, 6), hidden=(10, 8, 6), gates: str = "none"
) -> LSTMCTCEncoder:
    torch.manual_seed(0)
    config = EncoderConfig(
        input_dim=20,
        vocab_size=7,
        conv_channels=list(convs),
        lstm_hidden=list(hidden),
        bidirectional=bidirectional,
        dropout=0.0,
        unit_gates=gates,
    )
    return LSTMCTCEncoder(config).eval()


def random_plan(encoder: LSTMCTCEncoder, fraction: float, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    plan = {}
    for name, (directions, units) in unit_groups(encoder).items():
        keep = max(1, int(units * fraction))
        rows = torch.stack([torch.randperm(units, generator=generator)[:keep] for _ in range(directions)])
        plan[name] = rows[0] if name.startswith("conv.") else rows
    return plan


INPUTS = (torch.randn(3, 50, 20, generator=torch.Generator().manual_seed(5)), torch.tensor([50, 41, 17]))


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("fraction", [0.3, 0.6])
def test_surgery_equals_masking(bidirectional, fraction):
    encoder = make_encoder(bidirectional)
    plan = random_plan(encoder, fraction, seed=int(fraction * 10))
    pruned, masked = prune_encoder(encoder, plan), mask_encoder(encoder, plan)
    expected, lengths = masked(*INPUTS)
    actual, pruned_lengths = pruned(*INPUTS)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(lengths, pruned_lengths)
    assert (actual - encoder(*INPUTS)[0]).abs().max() > 1e-3  # the plan really removed something
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in encoder.parameters())
    assert pruned.config.lstm_hidden == [plan[f"lstm.{i}"].shape[1] for i in range(3)]


def test_surgery_keeps_vib_gates_and_folding_is_exact():
    gated = add_unit_gates(make_encoder())
    with torch.no_grad():
        for gate in gates_of(gated):
            gate.mu.uniform_(0.2, 2.0)
    plan = random_plan(gated, 0.5, seed=3)
    pruned = prune_encoder(gated, plan)
    torch.testing.assert_close(
        pruned(*INPUTS)[0], mask_encoder(gated, plan)(*INPUTS)[0], rtol=1e-5, atol=1e-5
    )
    folded = fold_unit_gates(pruned)
    assert folded.config.unit_gates == "none" and not gates_of(folded)
    torch.testing.assert_close(folded(*INPUTS)[0], pruned(*INPUTS)[0], rtol=1e-5, atol=1e-5)


def test_pruned_model_file_loads_without_the_original_config(tmp_path):
    features = FeatureConfig(n_mels=20)
    recognizer = SpeechRecognizer(features, make_encoder().config)
    recognizer.encoder = prune_encoder(make_encoder(), random_plan(make_encoder(), 0.5, seed=1))
    tokenizer = train_tokenizer(["abcd", "dcab"] * 20, "char")  # 7 units, as the encoder's head
    assert tokenizer.vocab_size == recognizer.encoder.config.vocab_size
    save_model(tmp_path / "pruned.pt", recognizer.eval(), tokenizer)
    loaded = load_model(tmp_path / "pruned.pt")
    assert loaded.recognizer.encoder.config == recognizer.encoder.config
    assert loaded.recognizer.encoder.config.lstm_hidden == [5, 4, 3]
    waveform = torch.randn(1, 8000)
    torch.testing.assert_close(
        loaded.recognizer(waveform, torch.tensor([8000]))[0], recognizer(waveform, torch.tensor([8000]))[0]
    )


def test_keep_plan_errors_name_the_group():
    encoder = make_encoder()
    with pytest.raises(ValueError, match="lstm.7"):
        prune_encoder(encoder, {"lstm.7": torch.tensor([[0], [0]])})
    with pytest.raises(ValueError, match="lstm.0"):
        prune_encoder(encoder, {"lstm.0": torch.tensor([[0, 0], [1, 2]])})


def plant_useless_unit(encoder: LSTMCTCEncoder, layer: int, direction: int, unit: int) -> None:
    """Silence a unit: zero weights into it and every weight that reads it."""
    hidden = encoder.config.lstm_hidden[layer]
    suffix = "_reverse" if direction else ""
    lstm = encoder.lstms[layer]
    rows = torch.arange(4) * hidden + unit
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(lstm, name + suffix)[rows] = 0.0
        getattr(lstm, "weight_hh_l0" + suffix)[:, unit] = 0.0
        column = direction * hidden + unit
        reader = encoder.lstms[layer + 1] if layer + 1 < len(encoder.lstms) else encoder.head
        weights = (
            [reader.weight_ih_l0, reader.weight_ih_l0_reverse]
            if layer + 1 < len(encoder.lstms)
            else [reader.weight]
        )
        for weight in weights:
            weight[:, column] = 0.0


@pytest.mark.parametrize("criterion", ["mnp", "energy"])
def test_criterion_ranks_a_planted_useless_unit_last(criterion):
    encoder = make_encoder()
    plant_useless_unit(encoder, layer=1, direction=1, unit=3)
    scores = make_criterion(criterion).scores(encoder, PruningContext(features=INPUTS[0], lengths=INPUTS[1]))
    assert scores["lstm.1"][1].argmin() == 3
    assert scores["lstm.1"][1, 3] < 0.2 * scores["lstm.1"][1].sort().values[1]


def test_vib_gate_of_a_useless_unit_closes_and_ranks_last():
    """Train gates with a task loss and VIBNet's KL: the unit nobody reads loses its signal-to-noise."""
    encoder = add_unit_gates(make_encoder(hidden=(8,))).train()
    plant_useless_unit(encoder, layer=0, direction=0, unit=5)
    owner = torch.nn.Module()
    owner.recognizer = torch.nn.Module()
    owner.recognizer.encoder = encoder
    kl = VIBKLTerm(owner, weight=0.02)
    gate_params = [p for g in gates_of(encoder) for p in g.parameters()]
    optimizer = torch.optim.Adam(gate_params, lr=0.05)
    target = torch.randint(1, 7, (3, 3), generator=torch.Generator().manual_seed(0))
    for _ in range(150):
        log_probs, lengths = encoder(*INPUTS)
        ctc = F.ctc_loss(log_probs.transpose(0, 1), target, lengths, torch.full((3,), 3), zero_infinity=True)
        loss = ctc + kl(log_probs, lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scores = make_criterion("vib").scores(encoder.eval(), PruningContext())
    assert scores["lstm.0"][0].argmin() == 5
    assert scores["lstm.0"][0, 5] < scores["lstm.0"].median() - 1.0


def test_random_criterion_is_seeded_by_event():
    encoder = make_encoder()
    criterion = make_criterion("random", seed=4)
    first, again = (
        criterion.scores(encoder, PruningContext(event=2)),
        criterion.scores(encoder, PruningContext(event=2)),
    )
    other = criterion.scores(encoder, PruningContext(event=3))
    assert torch.equal(first["lstm.0"], again["lstm.0"]) and not torch.equal(first["lstm.0"], other["lstm.0"])


def test_selection_is_uniform_per_layer_and_direction_and_counts_from_original_sizes():
    encoder = make_encoder()
    original = unit_groups(encoder)
    scores = make_criterion("mnp").scores(encoder, PruningContext())
    plan = keep_top_units(encoder, scores, original, 0.5, ["lstm.0", "lstm.1", "lstm.2"])
    assert [plan[f"lstm.{i}"].shape for i in range(3)] == [(2, 5), (2, 4), (2, 3)]
    assert torch.equal(plan["lstm.0"][0], scores["lstm.0"][0].topk(5).indices.sort().values)
    pruned = prune_encoder(encoder, plan)
    assert lstm_sparsity(pruned, original) == pytest.approx(0.5)
    again = keep_top_units(
        pruned, make_criterion("mnp").scores(pruned, PruningContext()), original, 0.7, ["lstm.0"]
    )
    assert again["lstm.0"].shape == (2, 3)  # 30% of the original 10, not of the current 5


def test_schedules():
    iterative = ScheduleConfig(kind="iterative", target=0.85, step=0.1, epochs_between=1, final_epochs=2)
    assert sparsity_steps(iterative) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85]
    assert [e.epoch for e in pruning_events(iterative)] == list(range(9))
    assert total_epochs(iterative) == 10
    gradual = ScheduleConfig(kind="gradual", target=0.8, events=4, start_epoch=1, epochs_between=2)
    steps = sparsity_steps(gradual)
    assert steps[-1] == pytest.approx(0.8) and all(b > a for a, b in zip(steps, steps[1:], strict=False))
    assert steps[0] - 0 > steps[-1] - steps[-2]  # big cuts first
    assert [e.epoch for e in pruning_events(gradual)] == [1, 3, 5, 7]
    assert sparsity_steps(ScheduleConfig(kind="one_shot", target=0.6)) == [0.6]
    with pytest.raises(ValueError, match="kind"):
        ScheduleConfig(kind="sometimes")


def test_macs_follow_widths():
    encoder = make_encoder()
    features = FeatureConfig(n_mels=20)
    pruned = prune_encoder(encoder, random_plan(encoder, 0.5, seed=0))
    assert 0 < encoder_macs_per_second(pruned, features) < 0.5 * encoder_macs_per_second(encoder, features)


def test_sharpness_measures():
    peaky = torch.log_softmax(torch.tensor([[[9.0, 0, 0, 0], [0, 9.0, 0, 0]]]), -1)
    flat = torch.log_softmax(torch.tensor([[[0.0, 0.1, 0.0, 0.0], [0.0, 0.1, 0.0, 0.0]]]), -1)
    lengths = torch.tensor([2])
    for kind in ("frame_entropy", "nonblank_entropy", "soft_nonblank_entropy", "margin", "tail_mass"):
        measure = sharpness_measure(SharpnessRegularizerConfig(kind=kind))
        assert measure(peaky, lengths) < measure(flat, lengths)
    # only the second (non-blank) frame counts for nonblank_entropy
    mixed = torch.cat([flat[:, :1], peaky[:, 1:]], dim=1)
    mixed[0, 0] = torch.log_softmax(torch.tensor([1.0, 0.5, 0.5, 0.5]), -1)
    assert nonblank_entropy(mixed, lengths) == pytest.approx(
        float(mean_frame_entropy(peaky[:, 1:], torch.tensor([1])))
    )
    uniform = torch.log_softmax(torch.zeros(1, 2, 4), -1)
    assert tail_mass(uniform, lengths, top_k=2) == pytest.approx(0.5)


def test_entropy_regularizer_lowers_output_entropy_in_training():
    """The same tiny CTC training with and without lambda x entropy: the regularized model is peakier."""

    def train(weight: float) -> float:
        encoder = make_encoder(hidden=(16,)).train()
        measure = sharpness_measure(SharpnessRegularizerConfig(kind="frame_entropy"))
        optimizer = torch.optim.Adam(encoder.parameters(), lr=0.01)
        target = torch.randint(1, 7, (3, 3), generator=torch.Generator().manual_seed(1))
        for _ in range(60):
            log_probs, lengths = encoder(*INPUTS)
            loss = F.ctc_loss(
                log_probs.transpose(0, 1), target, lengths, torch.full((3,), 3), zero_infinity=True
            )
            loss = loss + weight * measure(log_probs, lengths)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return float(mean_frame_entropy(*encoder.eval()(*INPUTS)))

    vanilla, regularized = train(0.0), train(3.0)
    assert regularized < 0.85 * vanilla, (vanilla, regularized)
