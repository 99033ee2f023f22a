"""NeMo-style JSON-lines manifests: one utterance per line with audio_filepath, duration, text, speaker.

Any corpus in this format works with every speechprune command. Relative audio paths are resolved
against the manifest's folder, so a corpus folder can be moved as a whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from common.errors import ManifestError
from common.fileio import atomic_open


@dataclass(frozen=True)
class Utterance:
    """One manifest line. ``audio_filepath`` is absolute once read."""

    audio_filepath: str
    duration: float
    text: str
    speaker: str | None = None


def read_manifest(
    path: str | os.PathLike, on_bad_line: Callable[[str], None] | None = None
) -> list[Utterance]:
    """Parse a manifest; errors name the file and line so that a user can fix the entry.

    With ``on_bad_line`` (a batch job that keeps going, as evaluation does), a malformed line is reported
    through it and skipped instead of stopping the job; a manifest with no usable line is still an error.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest")
    utterances: list[Utterance] = []
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ManifestError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
                utterances.append(_utterance_from_entry(entry, path, line_number))
            except UnicodeDecodeError:
                problem = ManifestError(f"{path}:{line_number}: not UTF-8 text")
                if on_bad_line is None:
                    raise problem from None
                on_bad_line(str(problem))
            except ManifestError as problem:
                if on_bad_line is None:
                    raise
                on_bad_line(str(problem))
    if not utterances:
        raise ManifestError(f"{path}: manifest holds no utterances")
    return utterances


def _utterance_from_entry(entry: object, path: Path, line_number: int) -> Utterance:
    where = f"{path}:{line_number}"
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: expected a JSON object")
    missing = [key for key in ("audio_filepath", "duration", "text") if key not in entry]
    if missing:
        raise ManifestError(f"{where}: missing field(s) {', '.join(missing)}")
    audio = Path(str(entry["audio_filepath"]))
    if not audio.is_absolute():
        audio = (path.parent / audio).resolve()
    try:
        duration = float(entry["duration"])
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: duration {entry['duration']!r} is not a number") from None
    speaker = entry.get("speaker")
    return Utterance(str(audio), duration, str(entry["text"]), None if speaker is None else str(speaker))


def write_manifest(path: str | os.PathLike, utterances: list[Utterance]) -> None:
    """Write atomically, storing audio paths relative to the manifest's folder when they lie below it."""
    path = Path(path)
    root = path.parent.resolve()
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for utterance in utterances:
            entry = asdict(utterance)
            audio = Path(utterance.audio_filepath).resolve()
            if audio.is_relative_to(root):
                entry["audio_filepath"] = str(audio.relative_to(root))
            if entry["speaker"] is None:
                del entry["speaker"]
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
