"""Transcribe audio files with a (pruned or unpruned) model: what ``speechprune transcribe`` runs.

Inputs are files, directories (searched recursively for audio) and glob patterns. Every file is read with
soundfile, mixed to mono and resampled to the model's rate; files are encoded in batches with an explicit
thread count and decoded one by one with the chosen decoder, so each result carries its own encoder and
decoder time. A file that cannot be read is reported by name and the run goes on.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asr.audio import AudioSpans
from asr.transcriber import GREEDY, Transcriber, Transcript
from common.errors import AudioError, SpeechpruneError
from common.units import WORD_BOUNDARY
from decoding.backends import DecoderSettings
from decoding.search_stats import aggregate_stats

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3")
CHUNK_SECONDS = 30.0  # files longer than twice this are encoded chunk by chunk, in bounded memory
CONTEXT_SECONDS = 2.0  # audio encoded either side of a chunk and dropped (bidirectional context)
SEARCH_SUMMARY_KEYS = ("tokens_kept_mean", "extensions_per_frame", "active_mean", "lm_queries_total")


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


def expand_inputs(inputs: Sequence[str], purpose: str = "transcribe") -> list[Path]:
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
        raise SpeechpruneError(f"nothing to {purpose} for: " + "; ".join(unmatched))
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
    """Reads files and hands their waveforms to a :class:`asr.transcriber.Transcriber` batch by batch."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        decoder: str = GREEDY,
        settings: DecoderSettings | None = None,
        threads: int = 1,
        chunk_seconds: float = CHUNK_SECONDS,
        context_seconds: float = CONTEXT_SECONDS,
        precision: str = "float32",
        trim_edges: bool = True,
    ) -> None:
        if chunk_seconds <= 0 or context_seconds < 0:
            raise SpeechpruneError(f"chunk_seconds {chunk_seconds} must be > 0, context_seconds >= 0")
        self.transcriber = Transcriber(
            model_path,
            threads=threads,
            decoder=decoder,
            settings=settings,
            precision=precision,
            trim_edges=trim_edges,
        )
        self.pieces = self.transcriber.pieces
        self.chunk_seconds, self.context_seconds = chunk_seconds, context_seconds

    def transcribe(self, paths: Sequence[Path], batch_size: int = 8) -> Iterator[FileTranscript | BadFile]:
        """Results in input order, one per path, batch by batch (so a caller can show progress)."""
        sample_rate = self.transcriber.sample_rate
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            waveforms: dict[int, np.ndarray] = {}
            results: list[FileTranscript | BadFile | None] = [None] * len(chunk)
            for index, path in enumerate(chunk):
                try:
                    spans = AudioSpans(path, sample_rate)
                    if spans.seconds > 2 * self.chunk_seconds:
                        transcript = self.transcriber.transcribe_long(
                            spans, self.chunk_seconds, self.context_seconds
                        )
                        results[index] = self._file_transcript(path, spans.seconds, transcript)
                    else:
                        waveforms[index] = spans.read(0, spans.samples)
                except AudioError as error:
                    results[index] = BadFile(str(path), str(error))
            if waveforms:
                transcripts = self.transcriber.transcribe(list(waveforms.values()))
                for (index, waveform), transcript in zip(waveforms.items(), transcripts, strict=True):
                    results[index] = self._file_transcript(
                        chunk[index], waveform.shape[0] / sample_rate, transcript
                    )
            yield from results  # type: ignore[misc]

    def _file_transcript(self, path: Path, duration_s: float, transcript: Transcript) -> FileTranscript:
        search = None
        if transcript.stats is not None:
            summary = aggregate_stats([transcript.stats])
            search = {key: round(float(summary[key]), 4) for key in SEARCH_SUMMARY_KEYS}
        return FileTranscript(
            path=str(path),
            text=transcript.text,
            score=transcript.score,
            duration_s=duration_s,
            encoder_ms=transcript.encoder_ms,
            decoder_ms=transcript.decoder_ms,
            words=word_timings(
                self.pieces, transcript.token_ids, transcript.token_frames, self.transcriber.frame_seconds
            ),
            search=search,
        )
