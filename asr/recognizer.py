"""Waveform -> CTC log-probabilities: the front end and the encoder as one deployable module."""

from __future__ import annotations

import torch
from torch import nn

from asr.features import FeatureConfig, LogMelFrontend
from asr.models.lstm_ctc import EncoderConfig, LSTMCTCEncoder


class SpeechRecognizer(nn.Module):
    """What runs on the device: features then encoder. Training inserts augmentation between the two."""

    def __init__(self, feature_config: FeatureConfig, encoder_config: EncoderConfig) -> None:
        super().__init__()
        if encoder_config.input_dim != feature_config.n_mels:
            raise ValueError(
                f"model.input_dim ({encoder_config.input_dim}) must equal "
                f"features.n_mels ({feature_config.n_mels})"
            )
        self.features = LogMelFrontend(feature_config)
        self.encoder = LSTMCTCEncoder(encoder_config)

    @property
    def sample_rate(self) -> int:
        return self.features.config.sample_rate

    @property
    def frame_stride(self) -> int:
        """Input samples per output frame (hop x time subsampling)."""
        return self.features.config.hop_length * self.encoder.config.subsampling

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, feature_lengths = self.features(waveforms, lengths)
        return self.encoder(features, feature_lengths)
