"""Batched inference with timings: waveforms -> log-probabilities -> greedy transcripts.

Timing is split into encoder (features + network) and decoder time, the two sides of the trade-off that
decoder-aware pruning is about. The thread count is set explicitly because edge CPUs have few cores and
timings mean nothing without it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from asr.checkpoint import load_model
from decoding.greedy import greedy_decode_with_timesteps


@dataclass
class Transcript:
    text: str
    token_ids: list[int]
    token_frames: list[int]  # encoder frame at which each token starts
    encoder_ms: float  # share of the batch's encoder time, by audio length
    decoder_ms: float


class Transcriber:
    """Loads a model file once and transcribes batches of waveforms at the model's sample rate."""

    def __init__(self, model_path: str | os.PathLike, threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        loaded = load_model(model_path)
        self.recognizer = loaded.recognizer
        self.tokenizer = loaded.tokenizer
        self.metadata = loaded.metadata

    @property
    def sample_rate(self) -> int:
        return self.recognizer.sample_rate

    @property
    def frame_seconds(self) -> float:
        """Duration of one encoder output frame (hop x time subsampling), for token timestamps."""
        features = self.recognizer.features.config
        return features.hop_ms / 1000 * self.recognizer.encoder.config.subsampling

    @torch.inference_mode()
    def transcribe(self, waveforms: list[torch.Tensor]) -> list[Transcript]:
        lengths = torch.tensor([w.shape[0] for w in waveforms])
        batch = torch.nn.utils.rnn.pad_sequence(waveforms, batch_first=True)
        started = time.perf_counter()
        log_probs, frame_lengths = self.recognizer(batch, lengths)
        encoded = time.perf_counter()
        decoded = greedy_decode_with_timesteps(log_probs, frame_lengths, self.tokenizer.blank_id)
        finished = time.perf_counter()
        shares = (lengths / lengths.sum()).tolist()
        encoder_ms, decoder_ms = (encoded - started) * 1000, (finished - encoded) * 1000
        return [
            Transcript(self.tokenizer.decode(ids), ids, frames, encoder_ms * share, decoder_ms * share)
            for (ids, frames), share in zip(decoded, shares, strict=True)
        ]
