"""Tests of per-frame entropy and tokens-for-mass statistics of CTC emissions."""

from __future__ import annotations

import json
import math

import pytest
import torch

from decoding import entropy_report, frame_entropy, mean_frame_entropy, tokens_for_mass


def _random(seed: int, batch: int, frames: int, vocab: int, scale: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, frames, vocab, generator=generator) * scale).log_softmax(-1)


def test_uniform_frames_have_entropy_log_v_and_one_hot_frames_zero():
    vocab = 7
    uniform = torch.full((1, 3, vocab), -math.log(vocab))
    one_hot = torch.full((1, 3, vocab), -math.inf)
    one_hot[..., 2] = 0.0
    log_probs = torch.cat([uniform, one_hot])
    uniform_h, one_hot_h = frame_entropy(log_probs, torch.tensor([3, 3]))
    assert torch.allclose(uniform_h, torch.full((3,), math.log(vocab), dtype=torch.float64))
    assert torch.equal(one_hot_h, torch.zeros(3, dtype=torch.float64))
    assert tokens_for_mass(log_probs, torch.tensor([3, 3]), 0.5)[1].tolist() == [1, 1, 1]


def test_entropy_matches_its_definition():
    log_probs = _random(0, 2, 6, 5, scale=2.0)
    probs = log_probs.double().exp()
    expected = -(probs * probs.log()).sum(-1)
    for got, want in zip(frame_entropy(log_probs, torch.tensor([6, 6])), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6)


def test_padding_frames_are_excluded():
    log_probs = _random(1, 2, 8, 4, scale=1.0)
    padded = log_probs.clone()
    padded[1, 5:] = torch.full((3, 4), -math.log(4))
    entropy = frame_entropy(padded, torch.tensor([8, 5]))
    assert [h.shape[0] for h in entropy] == [8, 5]
    assert torch.equal(entropy[1], frame_entropy(log_probs[1:, :5], torch.tensor([5]))[0])
    counts = tokens_for_mass(padded, torch.tensor([8, 0]), 0.9)
    assert [c.shape[0] for c in counts] == [8, 0]
    short = entropy_report(log_probs[1:, :5], torch.tensor([5]))
    assert entropy_report(padded[1:], torch.tensor([5])) == short


def test_tokens_for_mass_is_monotone_in_mass_and_bounded():
    log_probs = _random(2, 3, 20, 9, scale=1.5)
    lengths = torch.tensor([20, 11, 3])
    masses = [0.1, 0.5, 0.8, 0.95, 0.999, 1.0]
    counts = [torch.cat(tokens_for_mass(log_probs, lengths, m)) for m in masses]
    for lower, higher in zip(counts, counts[1:], strict=False):
        assert (lower <= higher).all()
    assert (counts[0] >= 1).all() and (counts[-1] <= 9).all()


def test_tokens_for_mass_counts_the_most_probable_tokens():
    log_probs = torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]).log()
    masses = (0.4, 0.6, 0.85, 0.97)
    assert [tokens_for_mass(log_probs, torch.tensor([1]), m)[0].item() for m in masses] == [1, 2, 3, 4]


def test_entropy_report_summarises_and_separates_nonblank_frames():
    confident_blank = [0.97, 0.01, 0.01, 0.01]
    unsure_token = [0.2, 0.4, 0.3, 0.1]
    log_probs = torch.tensor([[confident_blank, unsure_token, confident_blank, confident_blank]]).log()
    report = entropy_report(log_probs, torch.tensor([4]), mass=0.9)
    entropy = frame_entropy(log_probs, torch.tensor([4]))[0]
    assert report["frames"] == 4 and report["nonblank_frames"] == 1
    assert report["entropy_mean"] == pytest.approx(entropy.mean().item())
    assert report["entropy_nonblank_mean"] == pytest.approx(entropy[1].item())
    assert report["entropy_p50"] <= report["entropy_p90"] <= report["entropy_p99"]
    assert report["tokens_for_mass_mean"] == pytest.approx((1 + 3 + 1 + 1) / 4)
    assert report["tokens_for_mass_nonblank_mean"] == 3.0
    json.dumps(report)


def test_flatter_emissions_have_higher_entropy_and_need_more_tokens():
    peaky = entropy_report(_random(3, 2, 50, 12, scale=4.0), torch.tensor([50, 50]))
    flat = entropy_report(_random(3, 2, 50, 12, scale=0.5), torch.tensor([50, 50]))
    assert flat["entropy_mean"] > peaky["entropy_mean"]
    assert flat["tokens_for_mass_mean"] > peaky["tokens_for_mass_mean"]
    assert flat["effective_tokens_mean"] > peaky["effective_tokens_mean"]


@pytest.mark.parametrize("mass", [0.0, -0.1, 1.01])
def test_mass_must_be_a_probability(mass):
    log_probs = _random(4, 1, 3, 4, scale=1.0)
    with pytest.raises(ValueError, match="mass"):
        tokens_for_mass(log_probs, torch.tensor([3]), mass)
    with pytest.raises(ValueError, match="mass"):
        entropy_report(log_probs, torch.tensor([3]), mass=mass)


def test_entropy_report_needs_a_frame():
    with pytest.raises(ValueError, match="frame"):
        entropy_report(torch.zeros(1, 4, 3), torch.tensor([0]))


def test_mean_frame_entropy_matches_per_frame_entropy_and_has_gradients():
    logits = torch.randn(3, 7, 5, requires_grad=True)
    log_probs = torch.log_softmax(logits, dim=-1)
    lengths = torch.tensor([7, 4, 1])
    expected = torch.cat(frame_entropy(log_probs, lengths)).mean()
    value = mean_frame_entropy(log_probs, lengths)
    assert float(value) == pytest.approx(float(expected), rel=1e-5)
    value.backward()
    assert logits.grad[1, 4:].abs().sum() == 0 and logits.grad[1, :4].abs().sum() > 0  # padding ignored
