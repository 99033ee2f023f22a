"""Transcribe audio files with a (pruned or unpruned) model: what ``speechprune transcribe`` runs.

Inputs are files, directories (searched recursively for audio) and glob patterns. Every file is read with
soundfile, mixed to mono and resampled to the model's rate; files are encoded in batches with an explicit
thread count and decoded one by one with the chosen decoder, so each result carries its own encoder and
decoder time. A file that cannot be read is reported by name and the run goes on.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from asr.audio import load_audio
from asr.checkpoint import load_model
from asr.errors import AudioError, SpeechpruneError
from decoding.backends import BackendResult, DecoderSettings, make_decoder
from decoding.greedy import greedy_decode_with_timesteps
from decoding.prefix_trie import WORD_BOUNDARY
from decoding.search_stats import aggregate_stats

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3")
GREEDY = "greedy"


@dataclass
class FileTranscript:
    """One file's result. ``words`` hold start/end seconds from the CTC token timesteps."""

    path: str
    text: str
    score: float | None
    duration_s: float
    encoder_ms: float
    decoder_ms: float
    words: list[dict[str, Any]] = field(default_factory=list)
    search: dict[str, float] | None = None

    def to_row(self) -> dict[str, Any]:
        row = {
            "path": self.path,
            "text": self.text,
            "score": None if self.score is None else round(self.score, 4),
            "duration_s": round(self.duration_s, 3),
            "encoder_ms": round(self.encoder_ms, 3),
            "decoder_ms": round(self.decoder_ms, 3),
            "words": self.words,
        }
        if self.search is not None:
            row["search"] = self.search
        return row


@dataclass(frozen=True)
class BadFile:
    path: str
    reason: str


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files as given, audio files under directories (recursively), and glob matches, deduplicated in order.

    Raises SpeechpruneError naming every input that matched nothing. Files named explicitly are kept
    whatever their suffix (a bad one is then reported when read); directories and patterns yield only
    files with an audio suffix.
    """
    found: dict[Path, None] = {}
    unmatched = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found[path] = None
        elif path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            found.update(dict.fromkeys(matches))
            if not matches:
                unmatched.append(f"{item} (a folder with no {'/'.join(AUDIO_SUFFIXES)} files)")
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                unmatched.append(f"{item} (pattern matched no file)")
            found.update(dict.fromkeys(matches))
        else:
            unmatched.append(f"{item} (no such file or folder)")
    if unmatched:
        raise SpeechpruneError("nothing to transcribe for: " + "; ".join(unmatched))
    return list(found)


def word_timings(
    pieces: Sequence[str], tokens: Sequence[int], frames: Sequence[int], frame_s: float
) -> list[dict]:
    """Words with start and end in seconds: a word starts at a piece that begins with "▁" and ends one
    encoder frame after its last piece starts."""
    words: list[dict[str, Any]] = []
    for token, frame in zip(tokens, frames, strict=True):
        piece = pieces[token]
        if piece.startswith(WORD_BOUNDARY) or not words:
            words.append({"word": "", "start": frame * frame_s, "end": (frame + 1) * frame_s})
        words[-1]["word"] += piece.replace(WORD_BOUNDARY, "")
        words[-1]["end"] = (frame + 1) * frame_s
    return [
        {"word": w["word"], "start": round(w["start"], 3), "end": round(w["end"], 3)}
        for w in words
        if w["word"]
    ]


class FileTranscriber:
    """A model and a decoder, loaded once; ``decoder`` is "greedy" or a backend name of
    :func:`decoding.backends.make_decoder` with ``settings``."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        decoder: str = GREEDY,
        settings: DecoderSettings | None = None,
        threads: int = 1,
    ) -> None:
        torch.set_num_threads(threads)
        loaded = load_model(model_path)
        self.recognizer, self.tokenizer = loaded.recognizer, loaded.tokenizer
        self.pieces = self.tokenizer.pieces
        self.decoder_name = decoder
        self.backend = None if decoder == GREEDY else make_decoder(decoder, self.tokenizer, settings)
        config = self.recognizer.features.config
        self.frame_s = config.hop_ms / 1000 * self.recognizer.encoder.config.subsampling

    def transcribe(self, paths: Sequence[Path], batch_size: int = 8) -> Iterator[FileTranscript | BadFile]:
        """Results in input order, one per path, batch by batch (so a caller can show progress)."""
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            waveforms: dict[int, torch.Tensor] = {}
            results: list[FileTranscript | BadFile | None] = [None] * len(chunk)
            for index, path in enumerate(chunk):
                try:
                    waveforms[index] = load_audio(path, self.recognizer.sample_rate)
                except AudioError as error:
                    results[index] = BadFile(str(path), str(error))
            if waveforms:
                for index, transcript in zip(
                    waveforms, self._transcribe(list(waveforms.values())), strict=True
                ):
                    transcript.path = str(chunk[index])
                    results[index] = transcript
            yield from results  # type: ignore[misc]

    @torch.inference_mode()
    def _transcribe(self, waveforms: list[torch.Tensor]) -> list[FileTranscript]:
        lengths = torch.tensor([w.shape[0] for w in waveforms])
        batch = torch.nn.utils.rnn.pad_sequence(waveforms, batch_first=True)
        started = time.perf_counter()
        log_probs, frames = self.recognizer(batch, lengths)
        encoder_ms = (time.perf_counter() - started) * 1000
        shares = (lengths / lengths.sum()).tolist()
        transcripts = []
        for index, share in enumerate(shares):
            emissions, count = log_probs[index : index + 1], frames[index : index + 1]
            result = self._decode(emissions, count)
            words = []
            if result.tokens is not None and result.timesteps is not None:
                words = word_timings(self.pieces, result.tokens, result.timesteps, self.frame_s)
            search = None
            if result.stats is not None:
                summary = aggregate_stats([result.stats])
                search = {
                    key: round(float(summary[key]), 4)
                    for key in ("tokens_kept_mean", "extensions_per_frame", "active_mean", "lm_queries_total")
                }
            transcripts.append(
                FileTranscript(
                    path="",
                    text=result.text,
                    score=None if self.backend is None else result.score,
                    duration_s=float(lengths[index]) / self.recognizer.sample_rate,
                    encoder_ms=encoder_ms * share,
                    decoder_ms=result.wall_time_s * 1000,
                    words=words,
                    search=search,
                )
            )
        return transcripts

    def _decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> BackendResult:
        if self.backend is not None:
            return self.backend(log_probs, lengths)[0]
        started = time.perf_counter()
        ((tokens, timesteps),) = greedy_decode_with_timesteps(log_probs, lengths, self.tokenizer.blank_id)
        elapsed = time.perf_counter() - started
        return BackendResult(self.tokenizer.decode(tokens), tokens, timesteps, 0.0, elapsed)
