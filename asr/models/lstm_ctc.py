"""The stacked-LSTM CTC acoustic model of the entropy-pruning paper, with a convolutional front end.

Every width lives in ``EncoderConfig`` as a per-layer list, and each LSTM layer is its own ``nn.LSTM``, so a
structurally pruned model (fewer conv channels, uneven LSTM layers) is just another config: it is saved and
rebuilt from its checkpoint alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from asr.models.gates import InformationBottleneckGate
from common.masks import valid_frame_mask

UNIT_GATES = {"none", "vib"}
GATES_PER_UNIT = 4  # input, forget, cell, output: nn.LSTM stacks their rows in each weight and bias
CONV_KERNEL = 3
CONV_STRIDE = 2
LSTM_WEIGHT_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def direction_suffixes(directions: int) -> list[str]:
    """nn.LSTM's parameter-name suffix per direction: forward "", backward "_reverse"."""
    return ["", "_reverse"][:directions]


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
    unit_gates: str = "none"  # "vib": a variational information-bottleneck gate on every LSTM unit

    def __post_init__(self) -> None:
        if not self.lstm_hidden or min(self.lstm_hidden) < 1:
            raise ValueError(
                f"model.lstm_hidden needs at least one layer of >= 1 unit, got {self.lstm_hidden}"
            )
        if any(c < 1 for c in self.conv_channels):
            raise ValueError(f"model.conv_channels must be positive, got {self.conv_channels}")
        if self.unit_gates not in UNIT_GATES:
            raise ValueError(f"model.unit_gates must be one of {sorted(UNIT_GATES)}, got {self.unit_gates!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def subsampling(self) -> int:
        return CONV_STRIDE ** len(self.conv_channels)

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1


def conv_output_length(lengths: torch.Tensor | int) -> torch.Tensor | int:
    """Frames (or frequency bins) after one conv layer of kernel 3, stride 2, padding 1."""
    return (lengths - 1) // CONV_STRIDE + 1


class ConvSubsampling(nn.Module):
    """Stride-2 2-D convolutions over (time, mel): cut the frame rate the LSTMs run at by 2 per layer."""

    def __init__(self, input_dim: int, channels: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, freq = 1, input_dim
        for out_channels in channels:
            conv = nn.Conv2d(
                in_channels, out_channels, CONV_KERNEL, stride=CONV_STRIDE, padding=CONV_KERNEL // 2
            )
            layers += [conv, nn.ReLU()]
            in_channels, freq = out_channels, conv_output_length(freq)
        self.layers = nn.Sequential(*layers)
        self.output_freq = freq  # frequency bins per channel of the flattened output (channel-major)
        self.output_dim = in_channels * freq if channels else input_dim

    @property
    def convs(self) -> list[nn.Conv2d]:
        return [layer for layer in self.layers if isinstance(layer, nn.Conv2d)]

    def conv_outputs(
        self, features: torch.Tensor, lengths: torch.Tensor, mask_padding: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each conv layer's activation (batch, channels, frames, freq) and its valid frame counts, for
        ``features`` (batch, frames, input_dim) with valid ``lengths``.

        With ``mask_padding``, frames past an utterance's end in a batch are set to zero after every
        layer: the next conv's kernel reaches one frame past the end, and there it must see the zeros a
        lone utterance is padded with, not the activation of the padding (ReLU of the bias), or an
        utterance's emissions would depend on what it is batched with. A lone utterance has no padding,
        so batch size 1 (what a device runs, and the ONNX export) computes no mask.
        """
        masked = mask_padding and features.shape[0] > 1

        def zero_padding(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            if not masked:
                return hidden
            return hidden * valid_frame_mask(lengths, hidden.shape[2])[:, None, :, None].to(hidden.dtype)

        # the input's padding is zero already with per-utterance normalization, not without it
        hidden = zero_padding(features.unsqueeze(1), lengths)
        layers = list(self.layers)
        for conv, activation in zip(layers[::2], layers[1::2], strict=True):
            lengths = conv_output_length(lengths)
            hidden = zero_padding(activation(conv(hidden)), lengths)
            yield hidden, lengths

    @staticmethod
    def flatten(hidden: torch.Tensor) -> torch.Tensor:
        """The last conv's activation (batch, channels, frames, freq) as LSTM input (batch, frames,
        channels x freq, channel-major)."""
        batch, channels, frames, freq = hidden.shape
        return hidden.permute(0, 2, 1, 3).reshape(batch, frames, channels * freq)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.convs:
            return features, lengths
        # Training keeps the padding's activation, as every model of the recipe was trained: masking it
        # in training too was not shown to be neutral (two leave-one-speaker-out folds, docs/new_voices.md).
        *_, (hidden, lengths) = self.conv_outputs(features, lengths, mask_padding=not self.training)
        return self.flatten(hidden), lengths


class LSTMCTCEncoder(nn.Module):
    """Features (batch, frames, input_dim) -> CTC log-probabilities (batch, frames / subsampling, vocab)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.frontend = ConvSubsampling(config.input_dim, config.conv_channels)
        self.lstms = nn.ModuleList()
        # One gate module per LSTM layer on its output units (both directions concatenated); Identity
        # holds no weights, so a plain model's state dict is unchanged.
        self.unit_gates = nn.ModuleList()
        input_size = self.frontend.output_dim
        for hidden in config.lstm_hidden:
            self.lstms.append(
                nn.LSTM(input_size, hidden, batch_first=True, bidirectional=config.bidirectional)
            )
            input_size = hidden * config.directions
            self.unit_gates.append(
                InformationBottleneckGate(input_size) if config.unit_gates == "vib" else nn.Identity()
            )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(input_size, config.vocab_size)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, lengths = self.frontend(features, lengths)
        lengths = lengths.clamp(min=1, max=hidden.shape[1])
        *_, hidden = self.lstm_outputs(hidden, lengths)
        logits = self.head(self.dropout(hidden))
        return torch.log_softmax(logits, dim=-1), lengths

    def conv_layers(self) -> list[nn.Conv2d]:
        """The front end's conv layers, in order (their output channels are prunable groups)."""
        return self.frontend.convs

    def lstm_parameter(self, layer: int, name: str, direction: int) -> nn.Parameter:
        """Weight or bias ``name`` (one of ``LSTM_WEIGHT_NAMES``) of LSTM ``layer`` for ``direction``."""
        return getattr(self.lstms[layer], name + direction_suffixes(self.config.directions)[direction])

    def lstm_outputs(self, hidden: torch.Tensor, lengths: torch.Tensor) -> Iterator[torch.Tensor]:
        """Each LSTM layer's (gated) output (batch, frames, directions x units) for front-end output
        ``hidden`` with valid ``lengths``: what data-driven pruning criteria and benchmarks look at."""
        for lstm, gate in zip(self.lstms, self.unit_gates, strict=True):
            packed = pack_padded_sequence(
                self.dropout(hidden), lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            output, _ = lstm(packed)
            hidden, _ = pad_packed_sequence(output, batch_first=True, total_length=hidden.shape[1])
            hidden = gate(hidden)
            yield hidden


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
