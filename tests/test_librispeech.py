"""LibriSpeech preparation on a generated corpus in the standard layout, through the API, the CLI and the
recipe's stage 0."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from asr.data.librispeech import prepare_subset
from asr.data.manifest import read_manifest
from common.errors import SpeechpruneError
from speechprune.cli import main

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "librispeech" / "run.sh"
TEXTS = ["HELLO WORLD", "PRUNING KEEPS THE DECODER FAST", "ONE TWO THREE"]


def make_librispeech(root: Path, subset: str, speakers=(19, 250), chapters=(198, 2001)) -> int:
    """SUBSET/SPEAKER/CHAPTER/{SPEAKER-CHAPTER-NNNN.flac, SPEAKER-CHAPTER.trans.txt}; returns utterances."""
    rng = np.random.default_rng(0)
    count = 0
    for speaker in speakers:
        for chapter in chapters:
            folder = root / subset / str(speaker) / str(chapter)
            folder.mkdir(parents=True)
            lines = []
            for index, text in enumerate(TEXTS):
                utterance = f"{speaker}-{chapter}-{index:04d}"
                samples = 0.1 * rng.standard_normal(16000 + 4000 * index).astype(np.float32)
                soundfile.write(folder / f"{utterance}.flac", samples, 16000)
                lines.append(f"{utterance} {text}")
                count += 1
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return count


def test_prepare_subset_writes_a_manifest_and_reports_missing_audio(tmp_path):
    count = make_librispeech(tmp_path / "LibriSpeech", "dev-clean")
    (tmp_path / "LibriSpeech" / "dev-clean" / "19" / "198" / "19-198-0001.flac").unlink()
    prepared = prepare_subset(tmp_path / "LibriSpeech", "dev-clean", tmp_path / "manifests", progress=False)
    assert prepared.utterances == count - 1
    assert len(prepared.skipped) == 1 and "19-198-0001.flac" in prepared.skipped[0]
    utterances = read_manifest(prepared.manifest)
    assert {u.speaker for u in utterances} == {"19", "250"}
    assert utterances[0].text == "hello world"
    assert utterances[0].duration == pytest.approx(1.0, abs=1e-3)
    assert all(Path(u.audio_filepath).is_file() for u in utterances)
    assert prepared.hours == pytest.approx(sum(u.duration for u in utterances) / 3600)


def test_missing_subset_is_named(tmp_path):
    with pytest.raises(SpeechpruneError, match="test-other"):
        prepare_subset(tmp_path, "test-other", tmp_path / "out")


def test_cli_prepares_several_subsets(tmp_path, capsys):
    root = tmp_path / "LibriSpeech"
    make_librispeech(root, "train-clean-100")
    make_librispeech(root, "test-clean", speakers=(61,))
    out = tmp_path / "manifests"
    assert (
        main(
            [
                "prepare-librispeech",
                "--root",
                str(root),
                "--subsets",
                "train-clean-100",
                "test-clean",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert len(read_manifest(out / "train-clean-100.jsonl")) == 12
    assert len(read_manifest(out / "test-clean.jsonl")) == 6
    assert main(["build-lm", str(out / "train-clean-100.jsonl"), "--out", str(tmp_path / "lm.arpa")]) == 0
    assert "\\3-grams:" in (tmp_path / "lm.arpa").read_text()


@pytest.mark.slow
def test_recipe_stage_0_prepares_the_corpus(tmp_path):
    root = tmp_path / "LibriSpeech"
    for subset in ("train-clean-100", "dev-clean", "test-clean", "test-other"):
        make_librispeech(root, subset, speakers=(7,), chapters=(1,))
    recipes = tmp_path / "recipes"  # run a copy: outputs land beside the script
    shutil.copytree(RECIPE.parents[1] / "common", recipes / "common")
    recipe = recipes / "librispeech"
    recipe.mkdir()
    (recipe / "run.sh").write_text(RECIPE.read_text())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(recipe / "run.sh"), "--corpus", str(root), "--stop-stage", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for subset in ("train-clean-100", "dev-clean", "test-clean", "test-other"):
        assert len(read_manifest(recipe / "data" / "manifests" / f"{subset}.jsonl")) == 3
