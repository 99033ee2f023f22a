"""The leave-one-speaker-out summary: mean over speakers, worst speaker, pooled WER, files a person reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "fsdd_digits"


def _fold(root: Path, speaker: str, errors: int, words: int, best_val_wer: float = 0.1) -> None:
    (root / speaker / "eval").mkdir(parents=True)
    summary = {"utterances": 10, "words": words, "word_errors": errors, "wer": errors / words}
    summary["sentence_error_rate"] = 0.5
    (root / speaker / "eval" / "test_speaker.summary.json").write_text(json.dumps(summary))
    (root / speaker / "train_summary.json").write_text(
        json.dumps({"epochs_completed": 4, "train_seconds_this_run": 60.0, "best_val_wer": best_val_wer})
    )


def test_summary_reports_mean_worst_and_pooled(tmp_path):
    _fold(tmp_path, "alice", 5, 100)
    _fold(tmp_path, "bob", 30, 200)
    _fold(tmp_path, "carol", 80, 80, best_val_wer=1.0)
    done = subprocess.run(
        [sys.executable, str(RECIPE / "local" / "loso_summary.py"), str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "loso.json").read_text())
    assert abs(summary["mean_wer"] - (0.05 + 0.15 + 1.0) / 3) < 1e-12  # each speaker counts once
    assert abs(summary["pooled_wer"] - 115 / 380) < 1e-12
    assert summary["worst"]["speaker"] == "carol"
    table = (tmp_path / "loso.md").read_text()
    assert "**40.00%**" in table
    # a fold that never left CTC's blank plateau is marked, in the table and on stderr; the others are not
    assert "100.00% (blank plateau)" in table and table.count("blank plateau") == 1
    assert "carol: validation WER 100% (CTC's blank plateau)" in done.stderr
    assert (tmp_path / "loso.png").read_bytes()[:4] == b"\x89PNG"
    assert "only 3 speakers finished" in done.stderr  # FSDD has six: a partial run says so


def test_summary_of_an_empty_folder_is_a_one_line_error(tmp_path):
    done = subprocess.run(
        [sys.executable, str(RECIPE / "local" / "loso_summary.py"), str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and str(tmp_path) in done.stderr


def test_the_stage_refuses_a_fold_for_a_speaker_fsdd_does_not_have(tmp_path):
    """--loso-speakers splits the six folds across processes; a misspelt name must neither exit 0 having
    trained nothing nor fall back to every fold: one line naming it and the speakers there are, first."""
    recordings = tmp_path / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    for name in ("0_alice_0.wav", "1_bob_0.wav"):
        (recordings / name).write_bytes(b"")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", str(RECIPE / "run.sh"), "--stage", "9", "--stop-stage", "9", "--fsdd-dir",
         str(tmp_path / "fsdd"), "--loso-speakers", "alice carol", "--loso-name", "never"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "'carol'" in done.stderr and "alice bob" in done.stderr
    assert "without alice" not in done.stdout and not (RECIPE / "exp" / "loso" / "never").exists()
