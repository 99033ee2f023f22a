"""What a model costs to run: parameters and multiply-accumulates per second of audio.

MACs are counted for the encoder network (conv front end, LSTMs, CTC head) at its frame rates; the
log-mel front end is the same for every pruned model and is left out. They predict the encoder speedup
that structured pruning should deliver, to set beside the measured latency ratio.
"""

from __future__ import annotations

from asr.features import FeatureConfig
from asr.models.lstm_ctc import LSTMCTCEncoder
from pruning.structure import GATES_PER_UNIT, conv_layers

CONV_KERNEL_AREA = 9  # 3 x 3 kernels


def encoder_macs_per_second(encoder: LSTMCTCEncoder, features: FeatureConfig) -> float:
    """Multiply-accumulates the encoder performs per second of input audio."""
    config = encoder.config
    frame_rate = 1000.0 / features.hop_ms
    freq = config.input_dim
    in_channels = 1
    macs = 0.0
    for conv in conv_layers(encoder):
        frame_rate, freq = frame_rate / 2, (freq - 1) // 2 + 1
        macs += frame_rate * freq * conv.out_channels * in_channels * CONV_KERNEL_AREA
        in_channels = conv.out_channels
    input_size = encoder.frontend.output_dim
    for hidden in config.lstm_hidden:
        macs += frame_rate * config.directions * GATES_PER_UNIT * hidden * (input_size + hidden)
        input_size = hidden * config.directions
    macs += frame_rate * input_size * config.vocab_size
    return macs
