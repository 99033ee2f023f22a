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
from decoding.backends import DecoderSettings, make_decoder
from decoding.greedy import greedy_decode_with_timesteps
from decoding.search_stats import SearchStats


@dataclass
class Transcript:
    text: str
    token_ids: list[int]
    token_frames: list[int]  # encoder frame at which each token starts
    encoder_ms: float  # share of the batch's encoder time, by audio length
    decoder_ms: float
    score: float | None = None  # the beam-search backend's score (None for greedy decoding)
    stats: SearchStats | None = None  # search statistics (the own decoder only)


GREEDY = "greedy"


class Transcriber:
    """Loads a model file once and transcribes batches of waveforms at the model's sample rate.

    ``decoder`` is "greedy" (batched, the fastest) or a beam-search backend name of
    :func:`decoding.backends.make_decoder` built with ``settings``; a backend decodes utterance by
    utterance so that each one's decoder time is its own.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        threads: int | None = None,
        decoder: str = GREEDY,
        settings: DecoderSettings | None = None,
    ) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        loaded = load_model(model_path)
        self.recognizer = loaded.recognizer
        self.tokenizer = loaded.tokenizer
        self.metadata = loaded.metadata
        self.backend = None if decoder == GREEDY else make_decoder(decoder, self.tokenizer, settings)

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
        encoder_ms = (time.perf_counter() - started) * 1000
        shares = (lengths / lengths.sum()).tolist()
        if self.backend is not None:
            return [
                Transcript(
                    r.text,
                    r.tokens or [],
                    r.timesteps or [],
                    encoder_ms * share,
                    r.wall_time_s * 1000,
                    r.score,
                    r.stats,
                )
                for r, share in zip(self.backend(log_probs, frame_lengths), shares, strict=True)
            ]
        started = time.perf_counter()
        decoded = greedy_decode_with_timesteps(log_probs, frame_lengths, self.tokenizer.blank_id)
        decoder_ms = (time.perf_counter() - started) * 1000
        return [
            Transcript(self.tokenizer.decode(ids), ids, frames, encoder_ms * share, decoder_ms * share)
            for (ids, frames), share in zip(decoded, shares, strict=True)
        ]
