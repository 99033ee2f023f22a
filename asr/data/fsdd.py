"""The Free Spoken Digit Dataset: finding it, downloading it when absent, and splitting it without leaks.

FSDD names its files ``{digit}_{speaker}_{index}.wav`` (8 kHz mono, 50 takes of each digit per speaker).
Its own convention keeps indices 0-4 of every digit and speaker for test; speechprune also keeps
indices 5-9 for validation and one whole speaker out of training, because users care about new voices.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from common.errors import SpeechpruneError

FSDD_ARCHIVE_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.zip"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_FILE_PATTERN = re.compile(r"^(?P<digit>\d)_(?P<speaker>[A-Za-z]+)_(?P<index>\d+)\.wav$")


@dataclass(frozen=True)
class Recording:
    """One isolated-digit recording of FSDD."""

    path: str
    digit: int
    speaker: str
    index: int


@dataclass(frozen=True)
class SplitRule:
    """Which FSDD takes go to which split: take indices per split, the speaker kept out of training
    (``None``: none, every speaker trains, for a model to deploy rather than to measure), and speakers the
    corpus leaves out altogether (``excluded_speakers``: a corpus with one speaker fewer measures what one
    more training speaker is worth to a new voice)."""

    heldout_speaker: str | None = "theo"
    test_indices: tuple[int, int] = (0, 4)
    valid_indices: tuple[int, int] = (5, 9)
    excluded_speakers: tuple[str, ...] = ()

    def split_of(self, recording: Recording) -> str:
        """Name of the split that owns ``recording``: train, valid, test, test_speaker or unused."""
        if recording.speaker in self.excluded_speakers:
            return "unused"
        if self.heldout_speaker is not None and recording.speaker == self.heldout_speaker:
            return "test_speaker"
        if self.test_indices[0] <= recording.index <= self.test_indices[1]:
            return "test"
        if self.valid_indices[0] <= recording.index <= self.valid_indices[1]:
            return "valid"
        return "train"


def shared_fsdd_fallback() -> Path:
    """Where these machines keep a read-only FSDD copy: ``../shared/data/fsdd`` beside the project root."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fsdd"


def locate_fsdd(data_dir: str | os.PathLike | None, download_to: str | os.PathLike | None = None) -> Path:
    """Return an FSDD folder holding ``recordings/``.

    Order: the folder the user named; the shared copy on these machines; a download from the
    public source into ``download_to`` (only if given, so nothing is fetched unless asked).
    """
    candidates = [Path(data_dir)] if data_dir else []
    candidates.append(shared_fsdd_fallback())
    for candidate in candidates:
        if (candidate / "recordings").is_dir():
            return candidate
        if candidate.name == "recordings" and candidate.is_dir():
            return candidate.parent
    if download_to is None:
        tried = ", ".join(str(c) for c in candidates)
        raise SpeechpruneError(f"FSDD not found (looked in {tried}); pass --fsdd-dir or --download-to")
    return download_fsdd(download_to)


def download_fsdd(target: str | os.PathLike) -> Path:
    """Download and unpack FSDD's recordings into ``target`` (atomic: unpacked aside, then moved)."""
    target = Path(target)
    if (target / "recordings").is_dir():
        return target
    target.mkdir(parents=True, exist_ok=True)
    print(f"Downloading FSDD from {FSDD_ARCHIVE_URL} ...", flush=True)
    try:
        with urllib.request.urlopen(FSDD_ARCHIVE_URL, timeout=60) as response:
            archive = zipfile.ZipFile(io.BytesIO(response.read()))
    except OSError as error:
        raise SpeechpruneError(f"could not download FSDD from {FSDD_ARCHIVE_URL}: {error}") from None
    staging = target / "recordings.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for member in archive.namelist():
        name = Path(member).name
        if "/recordings/" in member and _FILE_PATTERN.match(name):
            (staging / name).write_bytes(archive.read(member))
    staging.rename(target / "recordings")
    return target


def list_recordings(fsdd_dir: str | os.PathLike) -> list[Recording]:
    """All recordings under ``fsdd_dir/recordings``, sorted by file name for determinism."""
    folder = Path(fsdd_dir) / "recordings"
    recordings = []
    for path in sorted(folder.iterdir()):
        match = _FILE_PATTERN.match(path.name)
        if match:
            recordings.append(
                Recording(str(path), int(match["digit"]), match["speaker"], int(match["index"]))
            )
    if not recordings:
        raise SpeechpruneError(f"{folder}: no FSDD recordings named like 3_theo_12.wav")
    return recordings
