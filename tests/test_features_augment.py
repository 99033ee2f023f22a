"""Log-mel front end, per-utterance normalization, VTLP, waveform and spectrum augmentation."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from asr.augment import AugmentConfig, SpectrumAugmenter, WaveformAugmenter, add_noise, pitch_shift
from asr.features import FeatureConfig, LogMelFrontend, vtlp_warp
from asr.tokenizer import train_tokenizer
from common.errors import SpeechpruneError
from tests.conftest import fit_tiny, tiny_batches, tiny_module


def _tone(freq: float, seconds: float = 1.0, rate: int = 8000) -> torch.Tensor:
    return torch.sin(2 * torch.pi * freq * torch.arange(int(rate * seconds)) / rate)


def test_frontend_shapes_lengths_and_normalization():
    frontend = LogMelFrontend(FeatureConfig(n_mels=40))
    waveforms = torch.stack([_tone(500) + 0.01 * torch.randn(8000), torch.zeros(8000)])
    waveforms[1, :4000] = _tone(900, 0.5) + 0.05 * torch.randn(4000)
    features, lengths = frontend(waveforms, torch.tensor([8000, 4000]))
    assert features.shape == (2, 94, 40)  # (8000 - 512) // 80 + 1 frames lie wholly inside the audio
    assert lengths.tolist() == [94, 44]
    valid = features[1, :44]
    assert torch.allclose(valid.mean(dim=0), torch.zeros(40), atol=1e-3)
    assert (valid.std(dim=0, unbiased=False) - 1).abs().median() < 1e-2  # bands without variance stay ~0
    assert torch.all(features[1, 44:] == 0)  # padding stays zero


def test_an_utterance_gets_the_same_features_alone_or_padded_in_a_batch():
    frontend = LogMelFrontend(FeatureConfig(n_mels=40))
    speech = _tone(700, 0.6) * torch.linspace(0, 1, 4800)
    alone, _ = frontend(speech[None], torch.tensor([4800]))
    padded = torch.cat([speech, torch.zeros(3200)])[None]
    in_batch, _ = frontend(padded, torch.tensor([4800]))
    assert torch.allclose(alone[0], in_batch[0, : alone.shape[1]], atol=1e-5)
    assert torch.all(in_batch[0, alone.shape[1] :] == 0)


def test_vtlp_identity_and_direction():
    power = torch.rand(2, 257, 10)
    assert torch.allclose(vtlp_warp(power, torch.ones(2)), power, atol=1e-5)
    peak = torch.zeros(1, 257, 1)
    peak[0, 100, 0] = 1.0
    assert vtlp_warp(peak, torch.tensor([1.1]))[0, :, 0].argmax() in (109, 110, 111)  # formant moves up
    assert vtlp_warp(peak, torch.tensor([0.9]))[0, :, 0].argmax() in (89, 90, 91)


def test_pitch_shift_keeps_duration_and_moves_pitch():
    tone = _tone(400)
    shifted = pitch_shift(tone, Fraction(11, 10))
    assert shifted.shape == tone.shape
    spectrum = np.abs(np.fft.rfft(shifted[1000:7000].numpy()))
    assert abs(np.argmax(spectrum) * 8000 / 6000 - 440) < 10


def test_noise_is_added_at_the_requested_snr():
    torch.manual_seed(0)
    tone = _tone(300)
    noisy = add_noise(tone, snr_db=10.0)
    snr = 10 * torch.log10(tone.pow(2).mean() / (noisy - tone).pow(2).mean())
    assert abs(float(snr) - 10.0) < 0.5


def test_waveform_augmenter_changes_speed_and_signal():
    torch.manual_seed(0)
    augmenter = WaveformAugmenter(AugmentConfig(speed_factors=(1.1,), pitch_prob=1.0, noise_prob=1.0), 8000)
    out = augmenter(_tone(300))
    assert abs(out.shape[0] - 8000 / 1.1) < 20 and torch.isfinite(out).all()


def test_spectrum_augmenter_masks_some_values_only():
    torch.manual_seed(0)
    features = torch.randn(4, 120, 40)
    masked = SpectrumAugmenter(AugmentConfig(time_mask_max_ratio=1.0))(features.clone())
    changed = (masked != features).float().mean()
    assert 0.02 < changed < 0.8


def test_audio_shorter_than_one_frame_still_gives_one_frame():
    features, lengths = LogMelFrontend(FeatureConfig(n_mels=40))(torch.randn(1, 100), torch.tensor([100]))
    assert features.shape == (1, 1, 40) and lengths.tolist() == [1]


def test_simulated_rooms_add_a_decaying_tail_and_keep_the_peak():
    from asr.augment import reverberate
    from asr.rooms import simulated_rooms

    rooms = simulated_rooms(4, 8000, (0.3, 0.6), seed=3)
    assert rooms[0].shape == simulated_rooms(4, 8000, (0.3, 0.6), seed=3)[0].shape  # seeded
    click = torch.zeros(8000)
    click[100] = 0.5
    wet = reverberate(click, torch.from_numpy(rooms[0]))
    assert wet.shape == click.shape and abs(float(wet.abs().max()) - 0.5) < 1e-5
    tail = wet[100 + 400 : 100 + 1200].pow(2).sum()  # 50-150 ms after the click: reflections, not silence
    assert tail > 1e-4 * wet.pow(2).sum()
    with pytest.raises(SpeechpruneError, match="rt60_seconds"):
        simulated_rooms(1, 8000, (0.5, 0.2))


def test_channel_simulation_band_limits_and_companding_quantizes():
    from asr.augment import mu_law_round_trip

    torch.manual_seed(0)
    config = AugmentConfig(
        speed_factors=(), pitch_prob=0.0, noise_prob=0.0, channel_prob=1.0, eq_bands=0,
        highpass_hz=(400.0, 400.0), lowpass_hz=(2000.0, 2000.0),
    )  # fmt: skip
    augmenter = WaveformAugmenter(config, 8000)
    t = torch.arange(8000) / 8000
    low, high = torch.sin(2 * torch.pi * 60 * t), torch.sin(2 * torch.pi * 3800 * t)
    inside = torch.sin(2 * torch.pi * 1000 * t)
    for outside in (low, high):
        assert augmenter(outside)[800:].pow(2).mean() < 0.05 * outside.pow(2).mean()
    assert augmenter(inside)[800:].pow(2).mean() > 0.7 * inside.pow(2).mean()
    assert len(torch.unique(mu_law_round_trip(inside * 0.3))) <= 256
    with pytest.raises(SpeechpruneError, match="Nyquist"):
        WaveformAugmenter(AugmentConfig(channel_prob=1.0, lowpass_hz=(3000.0, 4500.0)), 8000)


@pytest.mark.parametrize("vtlp_range", [(1.0, 1.0), (0.8, 1.2)])
def test_training_runs_with_vtlp_off_or_wide(vtlp_range, tmp_path):
    """vtlp_range [1, 1] turns VTLP off (no factors drawn): a fit must still train, not fail on the first
    step (it once did)."""
    tokenizer = train_tokenizer(["zero one two three four five six seven eight nine"] * 5, "char")
    factors = SpectrumAugmenter(AugmentConfig(vtlp_range=vtlp_range)).warp_factors(3, torch.device("cpu"))
    assert (factors is None) == (vtlp_range == (1.0, 1.0))
    module = tiny_module(tokenizer)
    module.spectrum_augmenter = SpectrumAugmenter(AugmentConfig(vtlp_range=vtlp_range))
    before = {name: weight.clone() for name, weight in module.state_dict().items()}
    trainer = fit_tiny(module, tiny_batches(tokenizer, 2), tmp_path, max_epochs=1)
    assert trainer.global_step == 2
    assert any(not torch.equal(before[name], weight) for name, weight in module.state_dict().items())


def test_edge_silence_pads_both_ends_within_the_range_and_is_off_by_default():
    from asr.augment import AugmentConfig, WaveformAugmenter

    waveform = torch.randn(4000) * 0.1
    quiet = dict(speed_factors=(), pitch_prob=0.0, noise_prob=0.0)
    augment = WaveformAugmenter(AugmentConfig(edge_prob=1.0, edge_seconds=(0.1, 0.5), **quiet), 8000)
    for _ in range(5):
        padded = augment(waveform)
        nonzero = torch.nonzero(padded).flatten()
        lead, trail = int(nonzero[0]), len(padded) - int(nonzero[-1]) - 1
        assert 800 <= lead <= 4000 and 800 <= trail <= 4000
        assert torch.equal(padded[lead : lead + len(waveform)], waveform)
    assert torch.equal(WaveformAugmenter(AugmentConfig(**quiet), 8000)(waveform), waveform)  # off by default


def test_edge_silence_off_draws_no_random_number(monkeypatch):
    """Off (the recipe's default), the training draws are the ones every recipe model was trained with."""
    from asr import augment as augment_module

    draws = []
    real_rand = torch.rand
    monkeypatch.setattr(augment_module.torch, "rand", lambda *a, **k: draws.append(1) or real_rand(*a, **k))
    quiet = dict(speed_factors=(), pitch_prob=0.0, noise_prob=0.0)
    waveform = torch.randn(4000) * 0.1
    counts = []
    for edge_prob in (0.0, 1.0):
        draws.clear()
        WaveformAugmenter(AugmentConfig(edge_prob=edge_prob, **quiet), 8000)(waveform)
        counts.append(len(draws))
    assert counts[1] == counts[0] + 1
