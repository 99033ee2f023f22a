"""Training-only augmentation: speed, pitch, room, edge silence, noise, channel on waveforms; VTLP and
SpecAugment on spectra.

Six speakers reading digits into one setup is thin data for new voices and microphones, so augmentation
widens voice (pitch, vocal-tract length), tempo, room (simulated reverberation) and channel (band limits,
a microphone's uneven response, telephone companding). Test splits are never augmented. Pitch shifting
uses small rational ratios because torchaudio's resampler is fast for rates with a large common divisor
and very slow otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch
import torchaudio.functional as AF
import torchaudio.transforms as T
from torch import nn

from asr.rooms import simulated_rooms
from common.errors import SpeechpruneError


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation (an empty tuple or probability 0 turns one off)."""

    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    pitch_ratios: tuple[str, ...] = ("9/10", "19/20", "21/20", "11/10")
    pitch_prob: float = 0.3
    # Silence before and after the speech, drawn for each end (before the noise, which then covers it): a
    # user's recording carries more of it than the corpus strings' 0.02-0.3 s (docs/new_voices.md).
    edge_prob: float = 0.0
    edge_seconds: tuple[float, float] = (0.0, 0.6)
    noise_prob: float = 0.5
    noise_snr_db: tuple[float, float] = (8.0, 35.0)
    reverb_prob: float = 0.0
    rt60_seconds: tuple[float, float] = (0.15, 0.7)
    room_count: int = 100  # simulated rooms drawn once per run (about 4 s at 8 kHz)
    channel_prob: float = 0.0
    highpass_hz: tuple[float, float] = (50.0, 400.0)
    lowpass_hz: tuple[float, float] = (2400.0, 3800.0)
    eq_bands: int = 2  # peaking filters of random centre and gain: a microphone's uneven response
    eq_gain_db: tuple[float, float] = (-9.0, 9.0)
    mu_law_prob: float = 0.0  # of channel-simulated utterances, 8-bit G.711 companding (telephone codec)
    vtlp_range: tuple[float, float] = (0.9, 1.1)
    freq_masks: int = 2
    freq_mask_width: int = 12
    time_masks: int = 2
    time_mask_width: int = 12
    time_mask_max_ratio: float = 0.1

    def __post_init__(self) -> None:
        low, high = self.edge_seconds
        if not (0.0 <= self.edge_prob <= 1.0 and 0.0 <= low <= high):
            raise ValueError(
                f"augment.edge_prob must lie in [0, 1] and augment.edge_seconds be [low, high] with "
                f"0 <= low <= high, got {self.edge_prob} and {list(self.edge_seconds)}"
            )


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


def _choice(options: tuple) -> object:
    return options[int(torch.randint(len(options), ()))]


def time_stretch(
    waveform: torch.Tensor, rate: float, n_fft: int = 256, length: int | None = None
) -> torch.Tensor:
    """Play ``waveform`` ``rate`` times as fast keeping its pitch (phase vocoder); ``rate`` > 1 shortens it.

    ``length`` fixes the output's sample count (default: the input's length divided by ``rate``), so callers
    that resample afterwards get exactly the length they planned.
    """
    hop = n_fft // 4
    window = torch.hann_window(n_fft)
    spectrum = torch.stft(waveform, n_fft, hop_length=hop, window=window, return_complex=True)
    phase_advance = torch.linspace(0, torch.pi * hop, spectrum.shape[-2])[..., None]
    stretched = AF.phase_vocoder(spectrum, rate, phase_advance)
    if length is None:
        length = int(round(waveform.shape[-1] / rate))
    return torch.istft(stretched, n_fft, hop_length=hop, window=window, length=length)


def pitch_shift(waveform: torch.Tensor, ratio: Fraction, n_fft: int = 256) -> torch.Tensor:
    """Raise pitch by ``ratio`` keeping duration: stretch in time by ``ratio`` (phase vocoder), then resample.

    With a ratio like 21/20 the resampling kernel is tiny, so this costs milliseconds, not the ~100 ms of
    torchaudio.functional.pitch_shift with arbitrary semitone steps.
    """
    longer = time_stretch(
        waveform, float(1 / ratio), n_fft, length=int(round(waveform.shape[-1] * float(ratio)))
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


def reverberate(waveform: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """Convolve with a room's impulse response, keeping the length and the peak level of the input."""
    wet = AF.fftconvolve(waveform, response)[: waveform.shape[-1]]
    peak_in, peak_out = waveform.abs().max(), wet.abs().max().clamp(min=1e-10)
    return wet * (peak_in / peak_out)


def mu_law_round_trip(waveform: torch.Tensor, channels: int = 256) -> torch.Tensor:
    """G.711-style companding: 8-bit codes, coarse steps for loud samples, as a telephone line hears."""
    peak = waveform.abs().max().clamp(min=1e-10)
    codes = AF.mu_law_encoding((waveform / peak).clamp(-1.0, 1.0), channels)
    return AF.mu_law_decoding(codes, channels) * peak


def _check_band(config: AugmentConfig, sample_rate: int) -> None:
    nyquist = sample_rate / 2
    low_cut, high_cut = config.highpass_hz, config.lowpass_hz
    if not (0 < low_cut[0] <= low_cut[1] < high_cut[0] <= high_cut[1] < nyquist):
        raise SpeechpruneError(
            f"augment.highpass_hz {list(low_cut)} and augment.lowpass_hz {list(high_cut)} must be increasing "
            f"cut-offs below the Nyquist frequency ({nyquist:g} Hz at {sample_rate} Hz)"
        )


class WaveformAugmenter:
    """Random speed, pitch, room, noise and channel for one training waveform (runs in loader workers)."""

    def __init__(self, config: AugmentConfig, sample_rate: int) -> None:
        self.config = config
        self.sample_rate = sample_rate
        self.pitch_ratios = tuple(Fraction(r).limit_denominator(50) for r in config.pitch_ratios)
        if config.channel_prob > 0:
            _check_band(config, sample_rate)
        # Drawn here, in the main process, so every data-loader worker convolves with the same rooms.
        rooms = (
            simulated_rooms(config.room_count, sample_rate, tuple(config.rt60_seconds))
            if config.reverb_prob > 0
            else []
        )
        self.rooms = [torch.from_numpy(response) for response in rooms]

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        config = self.config
        if config.speed_factors:
            factor = float(_choice(config.speed_factors))
            if factor != 1.0:
                waveform = AF.speed(waveform[None], self.sample_rate, factor)[0][0]
        if self.pitch_ratios and torch.rand(()) < config.pitch_prob:
            waveform = pitch_shift(waveform, _choice(self.pitch_ratios))
        if self.rooms and torch.rand(()) < config.reverb_prob:
            waveform = reverberate(waveform, _choice(self.rooms))
        if config.edge_prob > 0 and torch.rand(()) < config.edge_prob:  # no draw when off: same stream
            lead, trail = (round(_uniform(*config.edge_seconds) * self.sample_rate) for _ in range(2))
            waveform = torch.nn.functional.pad(waveform, (lead, trail))
        if torch.rand(()) < config.noise_prob:
            waveform = add_noise(waveform, _uniform(*config.noise_snr_db))
        if torch.rand(()) < config.channel_prob:
            waveform = self._channel(waveform)
        return waveform

    def _channel(self, waveform: torch.Tensor) -> torch.Tensor:
        """Noise is added before this: a room's noise reaches the listener through the same microphone."""
        config = self.config
        filtered = AF.highpass_biquad(waveform, self.sample_rate, _uniform(*config.highpass_hz))
        filtered = AF.lowpass_biquad(filtered, self.sample_rate, _uniform(*config.lowpass_hz))
        for _ in range(config.eq_bands):
            centre = _uniform(200.0, 0.45 * self.sample_rate)
            filtered = AF.equalizer_biquad(
                filtered, self.sample_rate, centre, _uniform(*config.eq_gain_db), Q=_uniform(0.7, 2.5)
            )
        if torch.rand(()) < config.mu_law_prob:
            filtered = mu_law_round_trip(filtered)
        return filtered


class SpectrumAugmenter(nn.Module):
    """SpecAugment masks on normalized features (batch, frames, mels) and VTLP factors for the front end."""

    def __init__(self, config: AugmentConfig) -> None:
        super().__init__()
        self.config = config
        self.freq_masking = T.FrequencyMasking(config.freq_mask_width, iid_masks=True)
        self.time_masking = T.TimeMasking(
            config.time_mask_width, iid_masks=True, p=config.time_mask_max_ratio
        )

    def warp_factors(self, batch_size: int, device: torch.device) -> torch.Tensor | None:
        """One VTLP factor per utterance, or None when ``vtlp_range`` is [1, 1] (VTLP off)."""
        low, high = self.config.vtlp_range
        if low == high == 1.0:
            return None
        return torch.empty(batch_size).uniform_(low, high).to(device)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        spectra = features.transpose(1, 2).unsqueeze(1)  # (batch, 1, mels, frames)
        for _ in range(self.config.freq_masks):
            spectra = self.freq_masking(spectra)
        for _ in range(self.config.time_masks):
            spectra = self.time_masking(spectra)
        return spectra.squeeze(1).transpose(1, 2)
