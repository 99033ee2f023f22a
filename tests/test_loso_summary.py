"""The leave-one-speaker-out summary: mean over speakers, worst speaker, pooled WER, files a person reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "fsdd_digits"


SUMMARY = RECIPE / "local" / "loso_summary.py"


def _fold(
    root: Path,
    speaker: str,
    errors: int,
    words: int,
    best_val_wer: float = 0.1,
    kinds: bool = False,
    probe_errors: int | None = None,
    audio: str | None = None,
    val_errors: dict[str, int] | None = None,
) -> None:
    (root / speaker / "eval").mkdir(parents=True)
    summary = {"utterances": 10, "words": words, "word_errors": errors, "wer": errors / words}
    summary["sentence_error_rate"] = 0.5
    if audio is not None:  # the fingerprint of the scored audio (absent from older summaries)
        summary["audio_sha256"] = audio
    if kinds:  # evaluate's summaries count errors by kind; older ones do not
        deletions = errors // 2
        summary |= {"substitutions": errors - deletions - 1, "deletions": deletions, "insertions": 1}
    (root / speaker / "eval" / "test_speaker.summary.json").write_text(json.dumps(summary))
    if probe_errors is not None:  # scored on the fluent probe too
        probe = {"words": words, "word_errors": probe_errors, "wer": probe_errors / words}
        probe |= {"substitutions": probe_errors - 2, "deletions": 2, "insertions": 0}
        (root / speaker / "eval" / "test_speaker_tight.summary.json").write_text(json.dumps(probe))
    train = {"epochs_completed": 4, "train_seconds_this_run": 60.0, "best_val_wer": best_val_wer}
    if val_errors is not None:  # the exported model's validation errors (absent from older summaries)
        train["exported_val_errors"] = val_errors
    (root / speaker / "train_summary.json").write_text(json.dumps(train))


def test_summary_reports_mean_worst_and_pooled(tmp_path):
    _fold(tmp_path, "alice", 5, 100, kinds=True)
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
    assert "| alice | 100 | 5.00% | 2 / 2 / 1 |" in table and "| bob | 200 | 15.00% | - |" in table
    # a fold that never left CTC's blank plateau is marked, in the table and on stderr; the others are not
    assert "100.00% (blank plateau)" in table and table.count("(blank plateau)") == 1
    assert "carol: still on CTC's blank plateau" in done.stderr
    assert (tmp_path / "loso.png").read_bytes()[:4] == b"\x89PNG"
    assert "only 3 speakers finished" in done.stderr  # FSDD has six: a partial run says so


def test_a_fold_that_still_deletes_most_words_is_marked(tmp_path):
    """86% validation WER is no speaker's figure when most of those errors are deletions: such a fold
    barely left the plateau (a real seed-2 control read 85.40%, 1,811 of 2,411 words deleted)."""
    _fold(tmp_path, "dave", 70, 80, best_val_wer=0.86, val_errors={"substitutions": 5, "deletions": 60,
          "insertions": 0, "words": 80})  # fmt: skip
    _fold(tmp_path, "erin", 20, 80, best_val_wer=0.3, val_errors={"substitutions": 15, "deletions": 9,
          "insertions": 0, "words": 80})  # fmt: skip
    done = _summarize(tmp_path)
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "loso.md").read_text()
    assert "87.50% (blank plateau)" in table and table.count("(blank plateau)") == 1
    assert "dave: still on CTC's blank plateau" in done.stderr and "erin" not in done.stderr


def _log_validation(fold: Path, version: int, wers: dict[int, float]) -> None:
    """A Lightning CSV log as training writes it: training rows without ``val_wer``, one validation row per
    epoch."""
    lines = ["epoch,step,train_ctc,val_wer"]
    for epoch, wer in wers.items():
        lines += [f"{epoch},{10 * epoch + 5},2.7,", f"{epoch},{10 * epoch + 9},,{wer}"]
    (fold / "logs" / f"version_{version}").mkdir(parents=True)
    (fold / "logs" / f"version_{version}" / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_each_fold_says_how_long_it_sat_on_the_blank_plateau(tmp_path):
    """Seeds part on the plateau (3-4 epochs on it or 7-10 of 20-22 at the recipe's budget), so a fold's WER
    is read beside it. A resumed fit logs into the next version, whose epochs replace the interrupted ones."""
    _fold(tmp_path, "alice", 5, 100)
    _log_validation(tmp_path / "alice", 0, {0: 1.0, 1: 0.95, 2: 0.91})
    _log_validation(tmp_path / "alice", 1, {2: 0.88, 3: 0.62, 4: 0.31, 5: 0.08})  # resumed in epoch 2
    _fold(tmp_path, "bob", 70, 80, best_val_wer=0.86)
    _log_validation(tmp_path / "bob", 0, {0: 1.0, 1: 0.9, 2: 0.86})  # never left it
    _fold(tmp_path, "carol", 10, 100)  # no logs kept
    done = _summarize(tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {row["speaker"]: row for row in json.loads((tmp_path / "loso.json").read_text())["rows"]}
    assert [rows[s]["plateau_epochs"] for s in ("alice", "bob", "carol")] == [4, 3, None]
    table = (tmp_path / "loso.md").read_text()
    assert "| epochs | epochs on the blank plateau | training s |" in table
    assert "| 4 | 4 | 60 |" in table and "| 4 | 3 | 60 |" in table and "| 4 | - | 60 |" in table


def _summarize(*args: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SUMMARY), *map(str, args)], capture_output=True, text=True, check=False
    )


def test_a_lever_is_compared_with_its_control_on_the_folds_both_finished(tmp_path):
    control, lever = tmp_path / "control", tmp_path / "lever"
    for speaker, errors in (("alice", 10), ("bob", 40), ("carol", 50)):
        _fold(control, speaker, errors, 100)
    for speaker, errors in (("alice", 12), ("bob", 20), ("dave", 1)):
        _fold(lever, speaker, errors, 100)
    done = _summarize(lever, "--against", control)
    assert done.returncode == 0, done.stderr
    compared = json.loads((lever / "against_control.json").read_text())
    # carol and dave are each in one run only: the means are over alice and bob, paired
    assert compared["speakers"] == 2 and [p["speaker"] for p in compared["pairs"]] == ["alice", "bob"]
    assert compared["mean_wer_control"] == pytest.approx(0.25)
    assert compared["mean_wer_lever"] == pytest.approx(0.16)
    assert compared["mean_change_points"] == pytest.approx(-9.0) and compared["folds_better"] == 1
    table = (lever / "against_control.md").read_text()
    assert "| alice | 10.00% | 12.00% | +2.00 |" in table and "**-9.00** (1 of 2 better)" in table
    assert (lever / "against_control.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((lever / "loso.json").read_text())["speakers"] == 3  # its own summary as before


def test_the_fluent_probe_is_a_second_measure_averaged_only_when_every_fold_has_it(tmp_path):
    control, lever = tmp_path / "control", tmp_path / "lever"
    for speaker, errors, probe in (("alice", 10, 30), ("bob", 40, 60)):
        _fold(control, speaker, errors, 100, probe_errors=probe)
    _fold(lever, "alice", 12, 100, probe_errors=20)
    _fold(lever, "bob", 20, 100, probe_errors=40)
    done = _summarize(lever, "--against", control)
    assert done.returncode == 0, done.stderr
    table = (lever / "loso.md").read_text()
    assert "| 20.00% (18 / 2 / 0) |" in table and "| **30.00%** |" in table  # probe: alice, its mean
    assert json.loads((lever / "loso.json").read_text())["mean_probe_wer"] == pytest.approx(0.30)
    compared = json.loads((lever / "against_control.json").read_text())
    assert compared["probe_mean_change_points"] == pytest.approx(-15.0)
    assert compared["probe_folds_better"] == 2
    assert compared["mean_change_points"] == pytest.approx(-9.0) and compared["folds_better"] == 1
    paired = (lever / "against_control.md").read_text()
    assert "| alice | 10.00% | 12.00% | +2.00 | 30.00% | 20.00% | -10.00 |" in paired
    # a fold scored before the probe existed: no probe mean, no probe comparison, rather than a partial one
    _fold(control, "carol", 5, 100)
    _fold(lever, "carol", 5, 100)
    assert _summarize(lever, "--against", control).returncode == 0
    assert json.loads((lever / "loso.json").read_text())["mean_probe_wer"] is None
    assert "probe" not in (lever / "against_control.md").read_text()
    assert "probe_mean_change_points" not in json.loads((lever / "against_control.json").read_text())


def test_folds_scored_on_other_audio_are_not_paired(tmp_path):
    """Runs made on two machines pair only the folds whose held-out strings were the same audio: a fold
    of a corpus built otherwise is left out and named; a summary without a fingerprint still pairs."""
    control, lever = tmp_path / "control", tmp_path / "lever"
    _fold(control, "alice", 10, 100, audio="aaaa")
    _fold(lever, "alice", 12, 100, audio="aaaa")
    _fold(control, "bob", 40, 100, audio="bbbb")
    _fold(lever, "bob", 20, 100, audio="other")
    _fold(control, "carol", 30, 100)
    _fold(lever, "carol", 20, 100, audio="cccc")
    done = _summarize(lever, "--against", control)
    assert done.returncode == 0, done.stderr
    compared = json.loads((lever / "against_control.json").read_text())
    assert [p["speaker"] for p in compared["pairs"]] == ["alice", "carol"]
    assert compared["mean_change_points"] == pytest.approx(-4.0)
    assert "bob: scored on other audio" in done.stderr
    only_bob = tmp_path / "only_bob"
    _fold(only_bob, "bob", 20, 100, audio="other")
    refused = _summarize(only_bob, "--against", control)
    assert refused.returncode == 2 and "bob were scored on other audio" in refused.stderr


def test_a_comparison_that_cannot_be_made_is_refused_before_anything_is_written(tmp_path):
    _fold(tmp_path / "run" / "lever", "alice", 1, 10)
    _fold(tmp_path / "other" / "lever", "alice", 2, 10)
    _fold(tmp_path / "control", "bob", 2, 10)
    (tmp_path / "empty").mkdir()
    for against, problem in (
        (tmp_path / "empty", "holds no"),
        (tmp_path / "other" / "lever", "both runs are named lever"),
        (tmp_path / "control", "no fold finished in both"),
    ):
        done = _summarize(tmp_path / "run" / "lever", "--against", against)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert str(against) in done.stderr and problem in done.stderr
    assert not list((tmp_path / "run" / "lever").glob("loso.*"))


def test_summary_of_an_empty_folder_is_a_one_line_error(tmp_path):
    done = subprocess.run(
        [sys.executable, str(RECIPE / "local" / "loso_summary.py"), str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and str(tmp_path) in done.stderr


def _run_stage(
    recipe: Path, fsdd: Path, speakers: tuple[str, ...], stage: int, *extra: str
) -> subprocess.CompletedProcess:
    """Runs one stage of ``recipe`` on an FSDD folder holding one empty recording per speaker."""
    (fsdd / "recordings").mkdir(parents=True)
    for number, speaker in enumerate(speakers):
        (fsdd / "recordings" / f"{number}_{speaker}_0.wav").write_bytes(b"")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(recipe / "run.sh"), "--stage", str(stage), "--stop-stage", str(stage), "--fsdd-dir",
         str(fsdd), *extra],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip


def _stage_9(
    recipe: Path, fsdd: Path, speakers: tuple[str, ...], folds: str, name: str, *extra: str
) -> subprocess.CompletedProcess:
    return _run_stage(recipe, fsdd, speakers, 9, "--loso-speakers", folds, "--loso-name", name, *extra)


def test_the_stage_refuses_a_fold_for_a_speaker_fsdd_does_not_have(tmp_path):
    """--loso-speakers splits the six folds across processes; a misspelt name must neither exit 0 having
    trained nothing nor fall back to every fold: one line naming it and the speakers there are, first."""
    done = _stage_9(RECIPE, tmp_path / "fsdd", ("alice", "bob"), "alice carol", "never")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "'carol'" in done.stderr and "alice bob" in done.stderr
    assert "without alice" not in done.stdout and not (RECIPE / "exp" / "loso" / "never").exists()


@pytest.mark.parametrize(
    ("folds", "exclude", "why"),
    [("alice", "alice", "'alice' is also in --loso-exclude"), ("alice", "carol", "no FSDD speaker 'carol'")],
)
def test_the_stage_refuses_to_exclude_a_fold_or_an_unknown_speaker(tmp_path, folds, exclude, why):
    """--loso-exclude leaves speakers out of every fold's corpus; holding one of them out as well, or a
    misspelt name, is one line before any work, not a fold trained on other speakers than asked."""
    done = _stage_9(RECIPE, tmp_path / "fsdd", ("alice", "bob"), folds, "never", "--loso-exclude", exclude)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and why in done.stderr
    assert "without alice" not in done.stdout and not (RECIPE / "exp" / "loso" / "never").exists()


def test_the_stage_names_a_missing_tokenizer_before_building_a_fold_corpus(tmp_path):
    """Stage 9 run on a fresh checkout (no stages 0-1) used to build the fold's corpus and only then stop
    inside `speechprune train`; it must say what is missing and how to make it, before any work. The recipe's
    scripts are copied so the check holds whatever the developer's own data/ holds."""
    recipe = tmp_path / "recipes" / "fsdd_digits"
    recipe.mkdir(parents=True)
    shutil.copy(RECIPE / "run.sh", recipe)
    shutil.copytree(RECIPE / "local", recipe / "local")
    shutil.copytree(RECIPE.parent / "common", recipe.parent / "common")
    done = _stage_9(recipe, tmp_path / "fsdd", ("alice",), "alice", "fresh")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "data/corpus/train_tts.jsonl is missing" in done.stderr
    assert "--stop-stage 1" in done.stderr
    assert "without alice" not in done.stdout and not (recipe / "data").exists()


def test_excluding_speakers_needs_a_run_name_of_its_own(tmp_path):
    """Folds of the default run train on every speaker; excluded-speaker folds written there would be
    skipped as finished or mixed into its summary."""
    done = _stage_9(
        RECIPE, tmp_path / "fsdd", ("alice", "bob", "carol"), "alice", "recipe", "--loso-exclude", "bob"
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "--loso-exclude needs its own --loso-name" in done.stderr
    assert "without alice" not in done.stdout


@pytest.mark.parametrize("exclude", ["alice bob", "bob  alice"])
def test_a_stage_that_excludes_every_speaker_refuses_before_any_work(tmp_path, exclude):
    done = _stage_9(RECIPE, tmp_path / "fsdd", ("alice", "bob"), "", "never", "--loso-exclude", exclude)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "leaves no speaker to hold out" in done.stderr
    assert not (RECIPE / "exp" / "loso" / "never").exists()


def test_the_every_speaker_stage_names_a_missing_tokenizer_before_building_its_corpus(tmp_path):
    """Stage 10 (the model trained on all six speakers) shares stage 9's units and eSpeak NG strings: on a
    fresh checkout it must say what to run first, before it builds a corpus."""
    recipe = tmp_path / "recipes" / "fsdd_digits"
    recipe.mkdir(parents=True)
    shutil.copy(RECIPE / "run.sh", recipe)
    shutil.copytree(RECIPE.parent / "common", recipe.parent / "common")
    done = _run_stage(recipe, tmp_path / "fsdd", (), 10)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "stage 10: data/corpus/train_tts.jsonl is missing" in done.stderr
    assert not (recipe / "data").exists() and not (recipe / "exp").exists()


SEEDS = RECIPE / "local" / "loso_seeds.py"


def _seeds(*args: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SEEDS), *map(str, args)], capture_output=True, text=True, check=False
    )


def test_a_lever_over_seeds_counts_only_beyond_the_controls_seed_spread(tmp_path):
    """A fold is better only when every lever seed beats every control seed, worse when every one is behind,
    else inside the spread, and level under half a point whatever the seeds; folds some run lacks or scored
    on other audio are left out."""
    control = [tmp_path / "control_s1", tmp_path / "control_s2"]
    lever = [tmp_path / "lever_s1", tmp_path / "lever_s2"]
    # alice: lever seeds 10, 12 against control 20, 30: better; bob: 41, 45 against 30, 40: worse;
    # carol: 15, 37 against 20, 30: inside (a point behind, in a 10-point spread); fred: 19.9, 19.8
    # against 20, 20 (per 100 words, of 1,000): every lever seed ahead, by 0.15 points: level
    for speaker, control_errors, lever_errors, words in (
        ("alice", (20, 30), (10, 12), 100),
        ("bob", (30, 40), (41, 45), 100),
        ("carol", (20, 30), (15, 37), 100),
        ("fred", (200, 200), (199, 198), 1000),
    ):
        for folder, errors in zip(control + lever, control_errors + lever_errors, strict=True):
            _fold(folder, speaker, errors, words, probe_errors=errors, audio="same")
    _fold(control[0], "dave", 5, 100, probe_errors=5)  # in one run only
    for folder, audio in zip(control + lever, ("x", "x", "x", "y"), strict=True):
        _fold(folder, "erin", 5, 100, probe_errors=5, audio=audio)  # lever_s2 scored other audio
    out = tmp_path / "out"
    done = _seeds("--lever", *lever, "--control", *control, "--out", out)
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "seeds.json").read_text())
    assert result["folds_left_out_other_audio"] == ["erin"] and "erin: scored on other audio" in done.stderr
    assert result["folds_left_out_unfinished"] == ["dave"] and "dave: not finished by every" in done.stderr
    pause = result["measures"]["wer"]
    assert [f["speaker"] for f in pause["folds"]] == ["alice", "bob", "carol", "fred"]
    assert [f["verdict"] for f in pause["folds"]] == ["better", "worse", "inside the seed spread", "level"]
    assert [f["change_points"] for f in pause["folds"]] == [-14.0, 8.0, 1.0, -0.15]
    assert [f["control_range_points"] for f in pause["folds"]] == [10.0, 10.0, 10.0, 0.0]
    assert pause["mean_control"] == pytest.approx(1.05 / 4)
    assert pause["mean_lever"] == pytest.approx(0.9985 / 4)
    assert pause["verdicts"] == {"better": 1, "worse": 1, "inside the seed spread": 1, "level": 1}
    assert result["measures"]["probe_wer"]["verdicts"] == pause["verdicts"]
    table = (out / "seeds.md").read_text()
    assert "| alice | 25.00% (20.00, 30.00) | 11.00% (10.00, 12.00) | -14.00 | 10.00 | better |" in table
    assert "1 better, 1 worse, 1 inside the seed spread, 1 level" in table and "fluent probe" in table
    rows = (out / "seeds.csv").read_text().splitlines()
    assert rows[0] == "measure,arm,run,speaker,wer" and len(rows) == 1 + 2 * 4 * 4  # measures, folds, runs
    strict = _seeds(
        "--lever", *lever, "--control", *control, "--out", tmp_path / "strict", "--level-within", 0
    )
    fred = json.loads((tmp_path / "strict" / "seeds.json").read_text())["measures"]["wer"]["folds"][3]
    assert strict.returncode == 0 and fred["verdict"] == "better"  # the control: no band, the seeds decide
    assert (out / "seeds.png").read_bytes()[:4] == b"\x89PNG"


def test_a_seed_comparison_that_cannot_be_made_is_a_one_line_error(tmp_path):
    _fold(tmp_path / "c1", "alice", 1, 10)
    _fold(tmp_path / "c2", "alice", 2, 10)
    _fold(tmp_path / "lever", "alice", 1, 10)
    _fold(tmp_path / "bob_only", "bob", 1, 10)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    for args, problem in (
        (["--lever", tmp_path / "lever", "--control", tmp_path / "c1"], "two or more runs of the control"),
        (["--lever", tmp_path / "c1", "--control", tmp_path / "c1", tmp_path / "c2"], "given twice"),
        (["--lever", tmp_path / "empty", "--control", tmp_path / "c1", tmp_path / "c2"], "holds no"),
        (["--lever", tmp_path / "bob_only", "--control", tmp_path / "c1", tmp_path / "c2"], "no fold"),
        (
            [
                "--lever",
                tmp_path / "lever",
                "--control",
                tmp_path / "c1",
                tmp_path / "c2",
                "--level-within",
                "-1",
            ],
            "--level-within",
        ),
    ):
        done = _seeds(*args, "--out", out)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert problem in done.stderr
    assert not out.exists()
