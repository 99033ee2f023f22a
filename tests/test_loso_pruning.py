"""What pruning costs a new voice: leave-one-speaker-out folds pruned by stage 9 (--loso-prune), each
snapshot's WER paired with its unpruned fold's, and the stage's wiring (which models it prunes and scores,
and that a rerun redoes nothing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "fsdd_digits"
PRUNING = RECIPE / "local" / "loso_pruning.py"
STEMS = ("test_speaker", "test_speaker_tight", "test")


def _scores(eval_dir: Path, wers: tuple[float, float, float], audio: str = "same") -> None:
    eval_dir.mkdir(parents=True, exist_ok=True)
    for stem, wer in zip(STEMS, wers, strict=True):
        summary = {"wer": wer, "parameters": 560_000, "audio_sha256": f"{audio}-{stem}"}
        (eval_dir / f"{stem}.summary.json").write_text(json.dumps(summary))


def _pruned_fold(root: Path, speaker: str, unpruned: tuple, snapshots: dict[tuple[str, int], tuple]) -> None:
    _scores(root / speaker / "eval", unpruned)
    for (run, percent), wers in snapshots.items():
        _scores(root / speaker / "prune" / run / "eval" / f"sparsity{percent}", wers)


def _summarize(*args: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PRUNING), *map(str, args)], capture_output=True, text=True, check=False
    )


def test_each_snapshot_is_paired_with_its_own_unpruned_fold(tmp_path):
    # WER on (held-out speaker, fluent probe, training speakers' takes), unpruned and per snapshot
    _pruned_fold(tmp_path, "alice", (0.10, 0.20, 0.01), {("mnp", 50): (0.12, 0.21, 0.01),
                 ("mnp", 85): (0.30, 0.40, 0.05)})  # fmt: skip
    _pruned_fold(tmp_path, "bob", (0.30, 0.30, 0.02), {("mnp", 50): (0.26, 0.33, 0.03),
                 ("mnp", 85): (0.50, 0.60, 0.08)})  # fmt: skip
    (tmp_path / "carol" / "eval").mkdir(parents=True)  # a fold never pruned is not part of the table
    done = _summarize(tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "pruning.json").read_text())
    groups = {(g["run"], g["sparsity"]): g for g in summary["groups"]}
    assert set(groups) == {("unpruned", 0.0), ("mnp", 0.5), ("mnp", 0.85)}
    half = groups[("mnp", 0.5)]
    assert half["folds"] == 2 and half["speakers"] == ["alice", "bob"]
    assert abs(half["heldout_mean_wer"] - 0.19) < 1e-12
    assert abs(half["heldout_mean_change_points"] - (2.0 - 4.0) / 2) < 1e-9  # +2 and -4 points, fold by fold
    assert abs(half["seen_mean_change_points"] - 0.5) < 1e-9
    assert half["heldout_folds_worse"] == 1 and half["heldout_worst"] == {"speaker": "bob", "wer": 0.26}
    assert groups[("mnp", 0.85)]["heldout_folds_worse"] == 2
    table = (tmp_path / "pruning.md").read_text()
    row = "| mnp | 50% | 0.56 M | 2 | **19.00%** (-1.00) | 27.00% (+2.00) | 2.00% (+0.50) | 1 of 2 "
    assert row + "| bob 26.00% |" in table
    assert "| unpruned | 0% |" in table and "| alice | mnp | 85% | 30.00% (+20.00) |" in table
    assert (tmp_path / "pruning.png").read_bytes()[:4] == b"\x89PNG"
    assert {"pruning.csv", "pruning.md", "pruning.json"} <= {p.name for p in tmp_path.iterdir()}


def test_runs_narrow_the_table_and_folds_pool_across_run_folders(tmp_path):
    snapshots = {("mnp", 50): (0.2, 0.2, 0.0), ("vib", 50): (0.1, 0.1, 0.0)}
    _pruned_fold(tmp_path / "a", "alice", (0.1, 0.1, 0.0), snapshots)
    _pruned_fold(tmp_path / "b", "bob", (0.1, 0.1, 0.0), {("mnp", 50): (0.3, 0.3, 0.0)})
    (tmp_path / "b" / "alice" / "eval").mkdir(parents=True)  # the same speaker, never pruned here: no clash
    done = _summarize(tmp_path / "a", tmp_path / "b", "--runs", "mnp", "--out", tmp_path / "both")
    assert done.returncode == 0, done.stderr
    groups = json.loads((tmp_path / "both" / "pruning.json").read_text())["groups"]
    assert [(g["run"], g["folds"]) for g in groups] == [("unpruned", 2), ("mnp", 2)]


def test_a_measure_a_snapshot_lacks_is_missing_not_zero(tmp_path):
    """A snapshot scored only on some measures, or whose evaluate could score nothing (``wer`` null), has
    no figure there: no mean, no worst fold, no fold counted as not worse."""
    _pruned_fold(tmp_path, "alice", (0.1, 0.1, 0.0), {})
    snapshot = tmp_path / "alice" / "prune" / "mnp" / "eval" / "sparsity85"
    snapshot.mkdir(parents=True)
    (snapshot / "test.summary.json").write_text(json.dumps({"wer": 0.2, "audio_sha256": "same-test"}))
    (snapshot / "test_speaker.summary.json").write_text(json.dumps({"wer": None, "audio_sha256": None}))
    (tmp_path / "alice" / "prune" / "mnp" / "eval" / "sparsity85_old").mkdir()  # not a snapshot's scores
    done = _summarize(tmp_path)
    assert done.returncode == 0, done.stderr
    group = json.loads((tmp_path / "pruning.json").read_text())["groups"][1]
    assert (group["run"], group["sparsity"], group["heldout_mean_wer"]) == ("mnp", 0.85, None)
    assert group["heldout_folds_changed"] == 0 and group["heldout_worst"] is None
    assert abs(group["seen_mean_change_points"] - 20.0) < 1e-9
    assert (
        "| mnp | 85% | - | 1 | - | - | 20.00% (+20.00) | 0 of 0 | - |"
        in (tmp_path / "pruning.md").read_text()
    )


def test_a_misspelt_run_is_named_not_dropped(tmp_path):
    _pruned_fold(tmp_path, "alice", (0.1, 0.1, 0.0), {("mnp", 50): (0.2, 0.2, 0.0)})
    done = _summarize(tmp_path, "--runs", "mnp", "vib_entorpy")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--runs" in done.stderr
    assert "vib_entorpy" in done.stderr and not (tmp_path / "pruning.csv").exists()


def test_a_snapshot_scored_on_other_audio_is_refused_before_anything_is_written(tmp_path):
    """A corpus rebuilt otherwise between the unpruned fold's scoring and the snapshot's would make the
    change measure the audio, not the pruning."""
    _pruned_fold(tmp_path, "alice", (0.1, 0.1, 0.0), {})
    _scores(tmp_path / "alice" / "prune" / "mnp" / "eval" / "sparsity50", (0.2, 0.2, 0.0), audio="other")
    done = _summarize(tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "other test_speaker audio" in done.stderr and not (tmp_path / "pruning.md").exists()


def test_a_speaker_pruned_in_two_run_folders_is_refused(tmp_path):
    for run_dir in ("a", "b"):
        _pruned_fold(tmp_path / run_dir, "alice", (0.1, 0.1, 0.0), {("mnp", 50): (0.2, 0.2, 0.0)})
    done = _summarize(tmp_path / "a", tmp_path / "b", "--out", tmp_path / "both")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "speaker alice" in done.stderr


def test_nothing_pruned_or_several_folders_without_out_is_a_one_line_error(tmp_path):
    (tmp_path / "alice" / "eval").mkdir(parents=True)
    done = _summarize(tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--loso-prune" in done.stderr
    done = _summarize(tmp_path, tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--out" in done.stderr


# A stand-in for the speechprune CLI: it logs each call and writes what the real command would, so the
# stage's wiring is checked in seconds without training anything.
FAKE_CLI = """#!/usr/bin/env python3
import json, sys
from pathlib import Path
args = sys.argv[1:]
with open(Path(__file__).with_name("calls.log"), "a") as log:
    log.write(" ".join(args) + "\\n")
def option(name):
    return args[args.index(name) + 1]
if args[0] == "prepare-fsdd":
    out = Path(option("--out"))
    out.mkdir(parents=True, exist_ok=True)
    for stem in ("train", "valid", "test", "test_speaker", "test_speaker_tight"):
        (out / f"{stem}.jsonl").write_text("")
elif args[0] == "prune":
    exp = Path(option("--exp-dir"))
    (exp / "snapshots").mkdir(parents=True)
    for percent in (50, 85):
        (exp / "snapshots" / f"sparsity{percent}.pt").write_text("")
    (exp / "prune_summary.json").write_text("{}")
elif args[0] == "evaluate":
    out = Path(option("--out"))
    out.mkdir(parents=True, exist_ok=True)
    wer = 0.2 if "prune" in args[1] else 0.1
    for manifest in args[2:args.index("--out")]:
        summary = {"wer": wer, "parameters": 1000, "audio_sha256": Path(manifest).stem}
        (out / (Path(manifest).stem + ".summary.json")).write_text(json.dumps(summary))
"""


def _recipe_with_fake_cli(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the recipe whose stage 9 finds a finished fold of `alice`, with `speechprune` faked."""
    recipe = tmp_path / "recipes" / "fsdd_digits"
    recipe.mkdir(parents=True)
    shutil.copy(RECIPE / "run.sh", recipe)
    shutil.copytree(RECIPE / "local", recipe / "local")
    shutil.copytree(RECIPE / "conf", recipe / "conf")
    shutil.copytree(RECIPE.parent / "common", recipe.parent / "common")
    for need in ("data/corpus/train_tts.jsonl", "data/lang/tokenizer.model"):
        (recipe / need).parent.mkdir(parents=True, exist_ok=True)
        (recipe / need).write_text("")
    fold = recipe / "exp" / "loso" / "done" / "alice"
    (fold / "eval").mkdir(parents=True)
    (fold / "model.pt").write_text("")
    train = {"epochs_completed": 4, "train_seconds_this_run": 60.0}
    (fold / "train_summary.json").write_text(json.dumps(train))
    for stem in ("test_speaker", "test_speaker_tight"):
        summary = {"wer": 0.1, "parameters": 1000, "audio_sha256": stem, "words": 10, "word_errors": 1}
        summary |= {"utterances": 5, "sentence_error_rate": 0.2}
        (fold / "eval" / f"{stem}.summary.json").write_text(json.dumps(summary))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "speechprune").write_text(FAKE_CLI)
    (bin_dir / "speechprune").chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return recipe, {**os.environ, "PATH": path}


def test_the_stage_prunes_a_finished_fold_scores_every_snapshot_and_a_rerun_redoes_nothing(tmp_path):
    recipe, env = _recipe_with_fake_cli(tmp_path)
    fsdd = tmp_path / "fsdd" / "recordings"
    fsdd.mkdir(parents=True)
    (fsdd / "0_alice_0.wav").write_bytes(b"")
    command = ["bash", str(recipe / "run.sh"), "--stage", "9", "--stop-stage", "9", "--fsdd-dir",
               str(fsdd.parent), "--loso-name", "done", "--loso-speakers", "alice",
               "--loso-prune", "mnp_vanilla vib_entropy"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "bin" / "calls.log").read_text().splitlines()
    fold = recipe / "exp" / "loso" / "done" / "alice"
    assert not any(call.startswith("train ") for call in calls)  # the fold was trained already
    pruned = [call for call in calls if call.startswith("prune ")]
    assert len(pruned) == 2 and all(call.startswith("prune exp/loso/done/alice/model.pt") for call in pruned)
    assert "prune.criterion=vib" in pruned[1] and "regularizer.weight=3.0" in pruned[1]
    evaluated = [call for call in calls if call.startswith("evaluate ")]
    # the unpruned fold on the training speakers' takes, then 2 runs x 2 snapshots on all three measures
    assert len(evaluated) == 1 + 4 and evaluated[0].split()[2].endswith("test.jsonl")
    assert all(len(call.split(" --out ")[0].split()) == 5 for call in evaluated[1:])
    groups = json.loads((fold.parent / "pruning.json").read_text())["groups"]
    assert [(g["run"], g["sparsity"]) for g in groups][:2] == [("unpruned", 0.0), ("mnp_vanilla", 0.5)]
    rerun = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert rerun.returncode == 0, rerun.stderr
    again = (tmp_path / "bin" / "calls.log").read_text().splitlines()[len(calls) :]
    assert not any(call.startswith(("prune ", "evaluate ", "train ")) for call in again)
    assert "mnp_vanilla already done" in rerun.stdout


def test_a_misspelt_pruning_run_is_refused_before_any_stage(tmp_path):
    recipe, env = _recipe_with_fake_cli(tmp_path)
    done = subprocess.run(
        ["bash", str(recipe / "run.sh"), "--stage", "9", "--stop-stage", "9", "--loso-prune", "mnp_vanila"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "mnp_vanila" in done.stderr
    assert not (tmp_path / "bin" / "calls.log").exists()


def test_the_every_speaker_stage_keeps_a_finished_training_and_prunes_it(tmp_path):
    """Stage 10's model is the one to deploy; its pruned snapshots are the files a board runs. A rerun to
    prune must not retrain it (nor rewrite its training summary), and each snapshot is scored once."""
    recipe, env = _recipe_with_fake_cli(tmp_path)
    trained = recipe / "exp" / "all_speakers"
    (trained / "eval").mkdir(parents=True)
    (trained / "model.pt").write_text("")
    (trained / "train_summary.json").write_text('{"train_seconds_this_run": 2473.0}')
    command = ["bash", str(recipe / "run.sh"), "--stage", "10", "--stop-stage", "10", "--fsdd-dir",
               str(tmp_path / "fsdd"), "--prune-runs", "vib_entropy"]  # fmt: skip
    for _ in range(2):
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, done.stderr
    calls = (tmp_path / "bin" / "calls.log").read_text().splitlines()
    assert not any(call.startswith("train ") for call in calls)
    assert [call.split()[1] for call in calls if call.startswith("prune ")] == ["exp/all_speakers/model.pt"]
    scored = [call.split()[1] for call in calls if call.startswith("evaluate ")]
    snapshots = "exp/all_speakers/prune/vib_entropy/snapshots"
    assert scored == ["exp/all_speakers/model.pt", f"{snapshots}/sparsity50.pt", f"{snapshots}/sparsity85.pt"]
    assert "2473.0" in (trained / "train_summary.json").read_text()


def _trained_all_speakers(recipe: Path, summary: dict) -> Path:
    trained = recipe / "exp" / "all_speakers"
    (trained / "eval").mkdir(parents=True)
    (trained / "model.pt").write_text("")
    (trained / "train_summary.json").write_text(json.dumps(summary))
    return trained


def _stage_10(recipe: Path, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    command = ["bash", str(recipe / "run.sh"), "--stage", "10", "--stop-stage", "10", "--fsdd-dir",
               str(tmp_path / "fsdd"), "--prune-runs", "vib_entropy"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


def test_a_rerun_does_not_prune_a_model_left_on_the_blank_plateau(tmp_path):
    """`train --fail-on-plateau` stops the first run; the rerun finds the finished training's summary and
    must stop again, not prune and score a model that emits only blanks."""
    recipe, env = _recipe_with_fake_cli(tmp_path)
    _trained_all_speakers(recipe, {"best_val_wer": 1.0, "epochs_completed": 2})
    done = _stage_10(recipe, env, tmp_path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "blank plateau" in done.stderr
    calls = (tmp_path / "bin" / "calls.log").read_text().splitlines()
    assert not any(call.startswith(("prune ", "evaluate ", "train ")) for call in calls)


def test_a_pruning_run_from_an_older_model_is_refused_and_stale_scores_are_redone(tmp_path):
    """A retrained model must neither keep the snapshots pruned from its predecessor nor resume their run;
    its own scores older than it are redone."""
    recipe, env = _recipe_with_fake_cli(tmp_path)
    trained = _trained_all_speakers(recipe, {"epochs_completed": 22})
    (trained / "eval" / "test.summary.json").write_text('{"wer": 0.5}')
    old_run = trained / "prune" / "vib_entropy"
    old_run.mkdir(parents=True)
    (old_run / "prune_summary.json").write_text("{}")
    past = (trained / "model.pt").stat().st_mtime - 60
    for old in (trained / "eval" / "test.summary.json", old_run / "prune_summary.json"):
        os.utime(old, (past, past))
    done = _stage_10(recipe, env, tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "pruned from an older" in done.stderr and "remove it" in done.stderr
    calls = (tmp_path / "bin" / "calls.log").read_text().splitlines()
    assert [call.split()[:2] for call in calls if not call.startswith("prepare-fsdd")] == [
        ["evaluate", "exp/all_speakers/model.pt"]
    ]
