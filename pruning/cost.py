"""What a model costs to run: parameters and multiply-accumulates per second of audio.

MACs are counted for the encoder network (conv front end, LSTMs, CTC head) at its frame rates; the
log-mel front end is the same for every pruned model and is left out. They predict the encoder speedup
that structured pruning should deliver, to set beside the measured latency ratio.
"""

from __future__ import annotations

from asr.features import FeatureConfig
from asr.models.lstm_ctc import CONV_KERNEL, CONV_STRIDE, GATES_PER_UNIT, LSTMCTCEncoder, conv_output_length


def encoder_macs_per_second(encoder: LSTMCTCEncoder, features: FeatureConfig) -> float:
    """Multiply-accumulates the encoder performs per second of input audio."""
    config = encoder.config
    frame_rate = 1000.0 / features.hop_ms
    freq = config.input_dim
    in_channels = 1
    macs = 0.0
    for conv in encoder.conv_layers():
        frame_rate, freq = frame_rate / CONV_STRIDE, conv_output_length(freq)
        macs += frame_rate * freq * conv.out_channels * in_channels * CONV_KERNEL**2
        in_channels = conv.out_channels
    input_size = encoder.frontend.output_dim
    for hidden in config.lstm_hidden:
        macs += frame_rate * config.directions * GATES_PER_UNIT * hidden * (input_size + hidden)
        input_size = hidden * config.directions
    macs += frame_rate * input_size * config.vocab_size
    return macs
