"""The stacked-LSTM CTC acoustic model of the entropy-pruning paper, with a convolutional front end.

Every width lives in ``EncoderConfig`` as a per-layer list, and each LSTM layer is its own ``nn.LSTM``, so a
structurally pruned model (fewer conv channels, uneven LSTM layers) is just another config: it is saved and
rebuilt from its checkpoint alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


@dataclass
class EncoderConfig:
    """Shapes of the encoder. ``conv_channels`` has one entry per stride-2 conv layer (time subsampling
    is 2 ** len(conv_channels)); ``lstm_hidden`` one entry per LSTM layer (units per direction)."""

    input_dim: int = 80
    vocab_size: int = 32
    conv_channels: list[int] = field(default_factory=lambda: [32, 32])
    lstm_hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    bidirectional: bool = True
    dropout: float = 0.15

    def __post_init__(self) -> None:
        if not self.lstm_hidden or min(self.lstm_hidden) < 1:
            raise ValueError(
                f"model.lstm_hidden needs at least one layer of >= 1 unit, got {self.lstm_hidden}"
            )
        if any(c < 1 for c in self.conv_channels):
            raise ValueError(f"model.conv_channels must be positive, got {self.conv_channels}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def subsampling(self) -> int:
        return 2 ** len(self.conv_channels)


def conv_output_length(lengths: torch.Tensor) -> torch.Tensor:
    """Frames after one conv layer of kernel 3, stride 2, padding 1."""
    return torch.div(lengths - 1, 2, rounding_mode="floor") + 1


class ConvSubsampling(nn.Module):
    """Stride-2 2-D convolutions over (time, mel): cut the frame rate the LSTMs run at by 2 per layer."""

    def __init__(self, input_dim: int, channels: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, freq = 1, input_dim
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.ReLU()]
            in_channels, freq = out_channels, (freq - 1) // 2 + 1
        self.layers = nn.Sequential(*layers)
        self.output_dim = in_channels * freq if channels else input_dim

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.layers) == 0:
            return features, lengths
        hidden = self.layers(features.unsqueeze(1))  # (batch, channels, frames, freq)
        batch, channels, frames, freq = hidden.shape
        for layer in self.layers:
            if isinstance(layer, nn.Conv2d):
                lengths = conv_output_length(lengths)
        return hidden.permute(0, 2, 1, 3).reshape(batch, frames, channels * freq), lengths


class LSTMCTCEncoder(nn.Module):
    """Features (batch, frames, input_dim) -> CTC log-probabilities (batch, frames / subsampling, vocab)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.frontend = ConvSubsampling(config.input_dim, config.conv_channels)
        directions = 2 if config.bidirectional else 1
        self.lstms = nn.ModuleList()
        input_size = self.frontend.output_dim
        for hidden in config.lstm_hidden:
            self.lstms.append(
                nn.LSTM(input_size, hidden, batch_first=True, bidirectional=config.bidirectional)
            )
            input_size = hidden * directions
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(input_size, config.vocab_size)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, lengths = self.frontend(features, lengths)
        lengths = lengths.clamp(min=1, max=hidden.shape[1])
        for lstm in self.lstms:
            packed = pack_padded_sequence(
                self.dropout(hidden), lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            output, _ = lstm(packed)
            hidden, _ = pad_packed_sequence(output, batch_first=True, total_length=hidden.shape[1])
        logits = self.head(self.dropout(hidden))
        return torch.log_softmax(logits, dim=-1), lengths


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
