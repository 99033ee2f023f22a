"""Training-only augmentation: speed, pitch and noise on waveforms; VTLP and SpecAugment on spectra.

Six speakers reading digits is thin data for new voices, so augmentation widens voice (pitch, vocal-tract
length), tempo and channel. Test splits are never augmented. Pitch shifting uses small rational ratios
because torchaudio's resampler is fast for rates with a large common divisor and very slow otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch
import torchaudio.functional as AF
import torchaudio.transforms as T
from torch import nn


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation (an empty tuple or probability 0 turns one off)."""

    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    pitch_ratios: tuple[str, ...] = ("9/10", "19/20", "21/20", "11/10")
    pitch_prob: float = 0.3
    noise_prob: float = 0.5
    noise_snr_db: tuple[float, float] = (8.0, 35.0)
    vtlp_range: tuple[float, float] = (0.9, 1.1)
    freq_masks: int = 2
    freq_mask_width: int = 12
    time_masks: int = 2
    time_mask_width: int = 12
    time_mask_max_ratio: float = 0.1


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


def _choice(options: tuple) -> object:
    return options[int(torch.randint(len(options), ()))]


def pitch_shift(waveform: torch.Tensor, ratio: Fraction, n_fft: int = 256) -> torch.Tensor:
    """Raise pitch by ``ratio`` keeping duration: stretch in time by ``ratio`` (phase vocoder), then resample.

    With a ratio like 21/20 the resampling kernel is tiny, so this costs milliseconds, not the ~100 ms of
    torchaudio.functional.pitch_shift with arbitrary semitone steps.
    """
    hop = n_fft // 4
    window = torch.hann_window(n_fft)
    spectrum = torch.stft(waveform, n_fft, hop_length=hop, window=window, return_complex=True)
    phase_advance = torch.linspace(0, torch.pi * hop, spectrum.shape[-2])[..., None]
    stretched = AF.phase_vocoder(spectrum, float(1 / ratio), phase_advance)
    longer = torch.istft(
        stretched, n_fft, hop_length=hop, window=window, length=int(round(waveform.shape[-1] * float(ratio)))
    )
    return AF.resample(longer, orig_freq=ratio.numerator, new_freq=ratio.denominator)[: waveform.shape[-1]]


def add_noise(waveform: torch.Tensor, snr_db: float) -> torch.Tensor:
    """Add pink-ish noise (white noise with a first-order low-pass tilt) ``snr_db`` below the signal."""
    white = torch.randn_like(waveform)
    tilted = white + torch.cat([white.new_zeros(1), white[:-1]]) * 0.9
    signal_power = waveform.pow(2).mean().clamp(min=1e-10)
    noise_power = tilted.pow(2).mean().clamp(min=1e-10)
    scale = torch.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return waveform + tilted * scale


class WaveformAugmenter:
    """Random speed, pitch and noise for one training waveform (runs in data-loader workers)."""

    def __init__(self, config: AugmentConfig, sample_rate: int) -> None:
        self.config = config
        self.sample_rate = sample_rate
        self.pitch_ratios = tuple(Fraction(r).limit_denominator(50) for r in config.pitch_ratios)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        config = self.config
        if config.speed_factors:
            factor = float(_choice(config.speed_factors))
            if factor != 1.0:
                waveform = AF.speed(waveform[None], self.sample_rate, factor)[0][0]
        if self.pitch_ratios and torch.rand(()) < config.pitch_prob:
            waveform = pitch_shift(waveform, _choice(self.pitch_ratios))
        if torch.rand(()) < config.noise_prob:
            waveform = add_noise(waveform, _uniform(*config.noise_snr_db))
        return waveform


class SpectrumAugmenter(nn.Module):
    """SpecAugment masks on normalized features (batch, frames, mels) and VTLP factors for the front end."""

    def __init__(self, config: AugmentConfig) -> None:
        super().__init__()
        self.config = config
        self.freq_masking = T.FrequencyMasking(config.freq_mask_width, iid_masks=True)
        self.time_masking = T.TimeMasking(
            config.time_mask_width, iid_masks=True, p=config.time_mask_max_ratio
        )

    def warp_factors(self, batch_size: int) -> torch.Tensor | None:
        low, high = self.config.vtlp_range
        if low == high == 1.0:
            return None
        return torch.empty(batch_size).uniform_(low, high)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        spectra = features.transpose(1, 2).unsqueeze(1)  # (batch, 1, mels, frames)
        for _ in range(self.config.freq_masks):
            spectra = self.freq_masking(spectra)
        for _ in range(self.config.time_masks):
            spectra = self.time_masking(spectra)
        return spectra.squeeze(1).transpose(1, 2)
