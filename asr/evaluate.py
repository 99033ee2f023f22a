"""Score a model on a manifest: per-utterance CSV rows and a summary JSON (WER, CER, real-time factor)."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from asr.audio import load_audio
from asr.data.fingerprint import AudioFingerprint
from asr.data.manifest import Utterance, read_manifest
from asr.metrics import ErrorCounts, error_counts, frequent_errors
from asr.transcriber import Transcriber
from common.errors import AudioError
from common.fileio import write_csv, write_json
from common.measure import percentile
from common.units import normalize_text


@dataclass
class EvaluationResult:
    summary: dict[str, Any]
    rows_path: Path
    summary_path: Path


def evaluate_manifest(
    model_path: str | os.PathLike,
    manifest_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    threads: int = 1,
    batch_size: int = 1,
    progress: bool = True,
    trim_edges: bool = True,
) -> EvaluationResult:
    """Transcribe every readable utterance greedily; unreadable files are listed, not fatal.

    With ``batch_size=1`` (the default) timings are per-utterance latencies as on a device. The
    transcriber trims silence before and after the speech as ``transcribe`` does, unless ``trim_edges``
    is False.
    """
    transcriber = Transcriber(model_path, threads=threads, trim_edges=trim_edges)
    bad_files: list[str] = []  # unreadable audio and malformed manifest lines: reported, not fatal
    utterances = read_manifest(manifest_path, on_bad_line=bad_files.append)
    name = Path(manifest_path).name.removesuffix(".jsonl").removesuffix(".json")
    rows: list[dict[str, Any]] = []
    totals = ErrorCounts()
    scored_audio = AudioFingerprint()  # what was scored, so results from two machines can be paired
    _warm_up(transcriber)
    for start in tqdm(
        range(0, len(utterances), batch_size), desc=f"evaluate {name}", disable=not progress, unit="batch"
    ):
        chunk = utterances[start : start + batch_size]
        loaded = []
        for utterance in chunk:
            try:
                loaded.append((utterance, load_audio(utterance.audio_filepath, transcriber.sample_rate)))
            except AudioError as error:
                bad_files.append(str(error))
        if not loaded:
            continue
        transcripts = transcriber.transcribe([waveform for _, waveform in loaded])
        for (utterance, waveform), transcript in zip(loaded, transcripts, strict=True):
            reference = normalize_text(utterance.text)
            counts = error_counts([reference], [transcript.text])
            totals += counts
            scored_audio.add(utterance)
            rows.append(
                _row(utterance, waveform.shape[0] / transcriber.sample_rate, reference, transcript, counts)
            )

    out_dir = Path(out_dir)
    rows_path, summary_path = out_dir / f"{name}.utterances.csv", out_dir / f"{name}.summary.json"
    if rows:
        write_csv(rows_path, rows)
    summary = _summary(model_path, manifest_path, transcriber, rows, totals, bad_files, threads, batch_size)
    summary["audio_sha256"] = scored_audio.hexdigest() if rows else None
    write_json(summary_path, summary)
    return EvaluationResult(summary, rows_path, summary_path)


def _warm_up(transcriber: Transcriber) -> None:
    """One throw-away pass so that one-time allocations do not land in the first utterance's latency."""
    transcriber.transcribe([torch.zeros(transcriber.sample_rate)])


def _row(utterance: Utterance, seconds: float, reference: str, transcript: Any, counts: ErrorCounts) -> dict:
    return {
        "audio_filepath": utterance.audio_filepath,
        "speaker": utterance.speaker or "",
        "duration_s": round(seconds, 3),
        "reference": reference,
        "hypothesis": transcript.text,
        "word_errors": counts.word_errors,
        "substitutions": counts.substitutions,
        "deletions": counts.deletions,
        "insertions": counts.insertions,
        "words": counts.words,
        "char_errors": counts.char_errors,
        "encoder_ms": round(transcript.encoder_ms, 3),
        "decoder_ms": round(transcript.decoder_ms, 3),
    }


def _summary(model_path, manifest_path, transcriber, rows, totals, bad_files, threads, batch_size) -> dict:
    audio_seconds = sum(r["duration_s"] for r in rows)
    compute_ms = [r["encoder_ms"] + r["decoder_ms"] for r in rows]
    encoder_ms = [r["encoder_ms"] for r in rows]
    scored = bool(rows)  # with nothing scored there is no error rate: null, never a perfect 0
    return {
        "model": str(model_path),
        "manifest": str(manifest_path),
        "utterances": len(rows),
        "bad_files": bad_files,
        "wer": round(totals.wer, 5) if scored else None,
        "cer": round(totals.cer, 5) if scored else None,
        "word_errors": totals.word_errors,
        "substitutions": totals.substitutions,
        "deletions": totals.deletions,
        "insertions": totals.insertions,
        "words": totals.words,
        "sentence_error_rate": round(sum(r["word_errors"] > 0 for r in rows) / len(rows), 5)
        if scored
        else None,
        "audio_seconds": round(audio_seconds, 2),
        "real_time_factor": float(f"{sum(compute_ms) / 1000 / audio_seconds:.4g}") if scored else None,
        "encoder_ms_median": round(statistics.median(encoder_ms), 3) if encoder_ms else None,
        "encoder_ms_p90": round(percentile(encoder_ms, 90), 3) if encoder_ms else None,
        "decoder": "greedy",
        "threads": threads,
        "batch_size": batch_size,
        "trim_edges": transcriber.trim_edges,  # the real-time factor divides by the whole audio either way
        "parameters": transcriber.encoder.parameters,
        "sample_rate": transcriber.sample_rate,
        "frequent_errors": frequent_errors([r["reference"] for r in rows], [r["hypothesis"] for r in rows]),
    }
