"""LibriSpeech in its standard layout -> speechprune manifests.

Layout (as unpacked from openslr.org/12): ``ROOT/SUBSET/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt`` holds
one ``UTTERANCE-ID TRANSCRIPT`` line per utterance, and ``UTTERANCE-ID.flac`` lies beside it. Nothing is
downloaded unless asked (``download_subset``). Transcripts are lower-cased (the project's normalization);
an utterance whose FLAC is missing or unreadable is left out and reported, not fatal.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import soundfile
from tqdm import tqdm

from asr.data.manifest import Utterance, write_manifest
from common.errors import SpeechpruneError

SUBSETS = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
)
OPENSLR_URL = "https://www.openslr.org/resources/12/{subset}.tar.gz"


@dataclass(frozen=True)
class PreparedSubset:
    manifest: Path
    utterances: int
    hours: float
    skipped: list[str]


def prepare_subset(
    root: str | os.PathLike, subset: str, out_dir: str | os.PathLike, progress: bool = True
) -> PreparedSubset:
    """Write ``out_dir/SUBSET.jsonl`` for ``root/SUBSET``; returns what was written and what was skipped."""
    folder = Path(root) / subset
    if not folder.is_dir():
        raise SpeechpruneError(
            f"{folder}: no such LibriSpeech subset folder (expected ROOT/{subset}/SPEAKER/CHAPTER)"
        )
    transcripts = sorted(folder.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise SpeechpruneError(
            f"{folder}: no SPEAKER/CHAPTER/*.trans.txt files; is this a LibriSpeech subset?"
        )
    utterances: list[Utterance] = []
    skipped: list[str] = []
    for transcript in tqdm(transcripts, desc=subset, unit="chapter", disable=not progress):
        speaker = transcript.parent.parent.name
        for number, line in enumerate(transcript.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            utterance_id, _, text = line.strip().partition(" ")
            audio = transcript.parent / f"{utterance_id}.flac"
            if not text.strip():
                skipped.append(f"{transcript}:{number}: no transcript for {utterance_id}")
                continue
            try:
                duration = soundfile.info(str(audio)).duration
            except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
                skipped.append(f"{audio}: unreadable or missing ({error})")
                continue
            utterances.append(
                Utterance(str(audio.resolve()), round(duration, 3), text.strip().lower(), speaker)
            )
    if not utterances:
        raise SpeechpruneError(f"{folder}: no readable utterances")
    manifest = Path(out_dir) / f"{subset}.jsonl"
    write_manifest(manifest, utterances)
    return PreparedSubset(manifest, len(utterances), sum(u.duration for u in utterances) / 3600, skipped)


def download_subset(root: str | os.PathLike, subset: str) -> Path:
    """Download and unpack one subset from openslr into ``root`` (unpacked aside, then moved into place)."""
    if subset not in SUBSETS:
        raise SpeechpruneError(f"unknown LibriSpeech subset {subset!r}; choose from {', '.join(SUBSETS)}")
    root = Path(root)
    if (root / subset).is_dir():
        return root / subset
    url = OPENSLR_URL.format(subset=subset)
    staging = root / f".{subset}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    archive = staging / f"{subset}.tar.gz"
    print(f"Downloading {url} ...", flush=True)
    try:
        urllib.request.urlretrieve(url, archive)
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
    except (OSError, tarfile.TarError) as error:
        raise SpeechpruneError(f"could not download or unpack {url}: {error}") from None
    (staging / "LibriSpeech" / subset).rename(root / subset)
    shutil.rmtree(staging, ignore_errors=True)
    return root / subset
