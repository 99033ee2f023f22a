"""Log-mel features with per-utterance normalization, computed inside the model.

Keeping the front end in the model means a checkpoint alone reproduces its features on any device, and a
16 kHz or 44.1 kHz input only needs resampling to the rate recorded in the feature config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio.transforms as T
from torch import nn

from common.masks import valid_frame_mask


@dataclass(frozen=True)
class FeatureConfig:
    """Front-end settings; saved in every checkpoint. ``sample_rate`` is the rate the model was trained at."""

    sample_rate: int = 8000
    n_mels: int = 80
    n_fft: int = 512
    win_ms: float = 25.0
    hop_ms: float = 10.0
    f_min: float = 20.0
    normalization: str = "utterance"

    def __post_init__(self) -> None:
        if not self.sample_rate >= 1000 or not self.n_mels >= 1 or not self.hop_ms > 0 or not self.win_ms > 0:
            raise ValueError(
                f"features: sample_rate {self.sample_rate}, n_mels {self.n_mels}, hop_ms {self.hop_ms} and "
                f"win_ms {self.win_ms} are not a usable front end"
            )
        if self.win_length > self.n_fft or self.f_min < 0 or self.f_min >= self.sample_rate / 2:
            raise ValueError(
                f"features: window {self.win_length} samples > n_fft {self.n_fft}, or f_min {self.f_min} "
                f"outside [0, {self.sample_rate / 2:g}) Hz"
            )
        if self.normalization not in ("utterance", "none"):
            raise ValueError(
                f"features.normalization must be 'utterance' or 'none', not {self.normalization!r}"
            )

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))


class LogMelFrontend(nn.Module):
    """Waveforms (batch, samples) -> normalized log-mel (batch, frames, n_mels) and valid frame counts.

    Normalization (mean and variance per mel band over the utterance's valid frames) removes channel and
    level differences between speakers and microphones, which matters most for voices never heard in training.
    """

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        self.config = config
        # center=False: every valid frame sees only the utterance's own samples, so an utterance gets the
        # same features alone or padded in a batch (centered frames would reflect real audio vs. padding)
        self.spectrogram = T.Spectrogram(
            n_fft=config.n_fft,
            win_length=config.win_length,
            hop_length=config.hop_length,
            power=2.0,
            center=False,
        )
        self.mel_scale = T.MelScale(
            n_mels=config.n_mels,
            sample_rate=config.sample_rate,
            f_min=config.f_min,
            f_max=config.sample_rate / 2,
            n_stft=config.n_fft // 2 + 1,
        )

    def frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        """Frames whose whole analysis span lies inside the waveform (at least one per utterance)."""
        inside = (
            torch.div(sample_lengths - self.config.n_fft, self.config.hop_length, rounding_mode="floor") + 1
        )
        return inside.clamp(min=1)

    def forward(
        self, waveforms: torch.Tensor, sample_lengths: torch.Tensor, warp_factors: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if waveforms.shape[1] < self.config.n_fft:  # shorter than one analysis span: pad to one frame
            waveforms = torch.nn.functional.pad(waveforms, (0, self.config.n_fft - waveforms.shape[1]))
        power = self.spectrogram(waveforms)  # (batch, freq, frames)
        if warp_factors is not None:
            power = vtlp_warp(power, warp_factors)
        log_mel = torch.log(self.mel_scale(power) + 1e-6).transpose(1, 2)  # (batch, frames, mels)
        lengths = self.frame_lengths(sample_lengths).clamp(max=log_mel.shape[1])
        if self.config.normalization == "utterance":
            log_mel = normalize_per_utterance(log_mel, lengths)
        return log_mel, lengths


def normalize_per_utterance(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per feature over each utterance's valid frames; padding is set to 0."""
    mask = valid_frame_mask(lengths.to(features.device), features.shape[1]).unsqueeze(-1).to(features.dtype)
    count = mask.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (features * mask).sum(dim=1, keepdim=True) / count
    variance = (((features - mean) * mask) ** 2).sum(dim=1, keepdim=True) / count
    return (features - mean) / torch.sqrt(variance + 1e-5) * mask


def vtlp_warp(power: torch.Tensor, warp_factors: torch.Tensor, boundary: float = 0.8) -> torch.Tensor:
    """Vocal-tract-length perturbation (Jaitly & Hinton 2013) of a power spectrogram (batch, freq, frames).

    Frequencies below ``boundary`` x Nyquist are scaled by the utterance's factor; above it a linear
    segment maps the rest onto Nyquist, so no band is lost. Implemented as linear interpolation of bins.
    """
    bins = power.shape[1]
    nyquist = float(bins - 1)
    target = torch.arange(bins, device=power.device, dtype=power.dtype)[None, :]  # output bin positions
    alpha = warp_factors.to(power.dtype)[:, None]
    knee = boundary * nyquist * torch.minimum(alpha, torch.ones_like(alpha)) / alpha
    # forward map f -> alpha*f below knee, linear to Nyquist above; invert it for each output bin
    warped_knee = alpha * knee
    below = target / alpha
    above = knee + (target - warped_knee) * (nyquist - knee) / (nyquist - warped_knee)
    source = torch.where(target <= warped_knee, below, above).clamp(0, nyquist)
    low = source.floor().long().clamp(max=bins - 2)
    weight = (source - low.to(power.dtype)).unsqueeze(-1)
    low_values = torch.gather(power, 1, low.unsqueeze(-1).expand(-1, -1, power.shape[2]))
    high_values = torch.gather(power, 1, (low + 1).unsqueeze(-1).expand(-1, -1, power.shape[2]))
    return low_values * (1 - weight) + high_values * weight
