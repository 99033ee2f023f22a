"""Weight averaging (``weight_averaging:`` in a train config): an observer of training that validates,
checkpoints and exports the moving average, resumes with it, and is refused where it would undo pruning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from asr.checkpoint import load_model
from asr.training import train
from asr.weight_averaging import CURRENT_WEIGHTS_KEY, write_trained_weights_checkpoint
from common.errors import SpeechpruneError
from speechprune.cli import main
from tests.conftest import tiny_config

EPOCHS = 3
DECAY = 0.9  # a short memory (10 steps) so that the average of the tiny run differs from its last weights


def _averaged_config(corpus: dict[str, Path], epochs: int = EPOCHS, **extra) -> dict:
    return {**tiny_config(corpus, epochs=epochs), "weight_averaging": {"decay": DECAY}, **extra}


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _recognizer_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value for name, value in state_dict.items() if name.startswith("recognizer.")}


def _assert_equal(weights: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> None:
    assert weights.keys() == other.keys()
    for name, value in weights.items():
        assert torch.equal(value, other[name]), name


@pytest.fixture(scope="module")
def plain_and_averaged(tiny_corpus, tmp_path_factory) -> tuple[Path, Path]:
    """The same tiny training twice, without and with weight averaging."""
    plain, averaged = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("averaged")
    train({**tiny_config(tiny_corpus, epochs=EPOCHS), "export_checkpoint": "last"}, plain)
    train(_averaged_config(tiny_corpus, export_checkpoint="last"), averaged)
    return plain, averaged


@pytest.mark.slow
def test_averaging_observes_training_and_exports_the_average(plain_and_averaged):
    plain, averaged = plain_and_averaged
    plain_last = _checkpoint(plain / "checkpoints" / "last.ckpt")
    averaged_last = _checkpoint(averaged / "checkpoints" / "last.ckpt")
    # the weights being trained follow the same path as without averaging (it changes no step)
    _assert_equal(
        _recognizer_weights(averaged_last[CURRENT_WEIGHTS_KEY]), _recognizer_weights(plain_last["state_dict"])
    )
    # what the checkpoint and the export hold is the average, which is not the last step's weights
    average = _recognizer_weights(averaged_last["state_dict"])
    current = _recognizer_weights(averaged_last[CURRENT_WEIGHTS_KEY])
    assert any(not torch.equal(average[name], current[name]) for name in average)
    exported = {
        f"recognizer.{k}": v for k, v in load_model(averaged / "model.pt").recognizer.state_dict().items()
    }
    _assert_equal(exported, average)
    summary = json.loads((averaged / "train_summary.json").read_text())
    assert summary["weight_averaging_decay"] == DECAY
    assert json.loads((plain / "train_summary.json").read_text())["weight_averaging_decay"] is None


@pytest.mark.slow
def test_a_resumed_fit_continues_the_average(plain_and_averaged, tiny_corpus, tmp_path):
    """Both finished runs, resumed for one more epoch: the trained weights come back from
    current_model_state (not from the average, or the two would part), and the average keeps its count
    of updates, one per optimizer step of both fits (restarted, it would count only the new epoch's)."""
    runs = {}
    for name, source in zip(("plain", "averaged"), plain_and_averaged, strict=True):
        runs[name] = tmp_path / name
        shutil.copytree(source, runs[name])
    train({**tiny_config(tiny_corpus, epochs=EPOCHS + 1), "export_checkpoint": "last"}, runs["plain"])
    train(_averaged_config(tiny_corpus, epochs=EPOCHS + 1), runs["averaged"])
    assert json.loads((runs["averaged"] / "train_summary.json").read_text())["resumed_from"]
    plain = _checkpoint(runs["plain"] / "checkpoints" / "last.ckpt")
    averaged = _checkpoint(runs["averaged"] / "checkpoints" / "last.ckpt")
    _assert_equal(
        _recognizer_weights(averaged[CURRENT_WEIGHTS_KEY]), _recognizer_weights(plain["state_dict"])
    )
    assert int(averaged["averaging_state"]["n_averaged"]) == averaged["global_step"] > 0


def test_a_fit_too_short_for_the_decay_warns(tiny_corpus, tmp_path):
    """One tiny epoch is 24 steps: at decay 0.998 the average would still be 95% the initial weights."""
    config = {**tiny_config(tiny_corpus, epochs=1), "weight_averaging": {"decay": 0.998}}
    with pytest.warns(UserWarning, match=r"still holds \d+% of the starting weights"):
        train(config, tmp_path / "exp")


@pytest.mark.parametrize("decay", [1.0, 0.0, "high", True])
def test_a_bad_decay_is_refused_before_training(tiny_corpus, tmp_path, capsys, decay):
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        yaml.safe_dump({**tiny_config(tiny_corpus, epochs=1), "weight_averaging": {"decay": decay}})
    )
    assert main(["train", "--config", str(config_path), "--exp-dir", str(tmp_path / "exp")]) != 0
    err = capsys.readouterr().err
    assert "weight_averaging.decay" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("job", ["prune", "search"])
def test_pruning_jobs_refuse_weight_averaging(tiny_corpus, tmp_path, job):
    """An average over weights from before a pruning mask would bring the pruned units back, so the
    section is refused by name before the base model is even read."""
    from pruning.job import prune
    from speechprune.search.job import run_search

    config = {**tiny_config(tiny_corpus, epochs=1), "weight_averaging": {"decay": DECAY}}
    for key in ("tokenizer", "features", "model"):
        config.pop(key)
    run = prune if job == "prune" else run_search
    with pytest.raises(SpeechpruneError, match=r"unknown key \['weight_averaging'\]"):
        run(config, tmp_path / "no_model.pt", tmp_path / "exp")
    assert not (tmp_path / "exp").exists()


@pytest.mark.slow
def test_the_trained_weights_of_an_averaged_fit_are_the_plain_fits(plain_and_averaged, tmp_path):
    """One averaged training yields both sides of the comparison: its trained weights, written as a
    checkpoint of their own, are what the fit without averaging exported."""
    plain, averaged = plain_and_averaged
    out = write_trained_weights_checkpoint(averaged / "checkpoints" / "last.ckpt", tmp_path / "trained.ckpt")
    trained = load_model(out).recognizer.state_dict()
    _assert_equal(trained, load_model(plain / "model.pt").recognizer.state_dict())
    with pytest.raises(SpeechpruneError, match=r"last\.ckpt: no current_model_state"):
        write_trained_weights_checkpoint(plain / "checkpoints" / "last.ckpt", tmp_path / "none.ckpt")
    assert not (tmp_path / "none.ckpt").exists()
