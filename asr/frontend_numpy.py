"""The log-mel front end in numpy alone, for the exported model on a device without torch.

It computes what :class:`asr.features.LogMelFrontend` computes for one utterance (power spectrogram with
a periodic Hann window zero-padded to ``n_fft``, ``center=False``; the exported mel filterbank; log with
the same floor; mean and variance normalization over the utterance), so that the ONNX encoder sees the
features it was trained on. ``tests/test_export.py`` checks the two agree on real utterances.
"""

from __future__ import annotations

from typing import Any

import numpy as np

LOG_FLOOR = 1e-6  # as LogMelFrontend
VARIANCE_FLOOR = 1e-5  # as normalize_per_utterance


def log_mel(waveform: np.ndarray, features: dict[str, Any], filterbank: np.ndarray) -> np.ndarray:
    """(frames, n_mels) float32 features of a mono float32 ``waveform`` at ``features['sample_rate']``."""
    n_fft = int(features["n_fft"])
    hop = int(round(features["sample_rate"] * features["hop_ms"] / 1000))
    win = int(round(features["sample_rate"] * features["win_ms"] / 1000))
    samples = np.asarray(waveform, dtype=np.float32)
    if samples.shape[0] < n_fft:
        samples = np.pad(samples, (0, n_fft - samples.shape[0]))
    window = np.zeros(n_fft, dtype=np.float64)
    left = (n_fft - win) // 2
    window[left : left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    frames = 1 + (samples.shape[0] - n_fft) // hop
    spans = np.lib.stride_tricks.sliding_window_view(samples, n_fft)[::hop][:frames]
    power = np.abs(np.fft.rfft(spans * window, n=n_fft)) ** 2
    values = np.log(power @ filterbank.astype(np.float64) + LOG_FLOOR)
    if features.get("normalization", "utterance") == "utterance":
        mean = values.mean(axis=0, keepdims=True)
        variance = ((values - mean) ** 2).mean(axis=0, keepdims=True)
        values = (values - mean) / np.sqrt(variance + VARIANCE_FLOOR)
    return values.astype(np.float32)
