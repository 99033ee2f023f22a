"""Pruning runs end to end on the tiny tone corpus: snapshots at every requested sparsity that load
from their file alone, VIBNet exports gate-free models, and an interrupted run resumes to
the same result."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from asr.checkpoint import load_model
from pruning.job import prune
from speechprune.cli import main
from tests.conftest import prune_config


@pytest.mark.slow
def test_prune_writes_smaller_snapshots_that_load_alone(tiny_corpus, base_model, tmp_path):
    exp = tmp_path / "mnp"
    status = main(
        [
            "prune",
            str(base_model),
            "--config",
            _write(prune_config(tiny_corpus), tmp_path),
            "--exp-dir",
            str(exp),
        ]
    )
    assert status == 0
    snapshots = json.loads((exp / "snapshots" / "snapshots.json").read_text())
    assert [s["sparsity"] for s in snapshots] == [0.25, 0.5]
    base_hidden = load_model(base_model).recognizer.encoder.config.lstm_hidden
    for entry, expected in zip(snapshots, [36, 24], strict=True):
        loaded = load_model(exp / "snapshots" / entry["path"])
        assert loaded.recognizer.encoder.config.lstm_hidden == [expected]
        assert base_hidden == [48]
        assert entry["parameters"] == sum(p.numel() for p in loaded.recognizer.encoder.parameters())
        assert 0.0 <= entry["val_wer"] <= 1.5
    summary = json.loads((exp / "prune_summary.json").read_text())
    assert [e["epoch"] for e in summary["events"]] == [0, 1]


@pytest.mark.slow
def test_vib_run_exports_gate_free_models(tiny_corpus, base_model, tmp_path):
    config = prune_config(tiny_corpus, criterion="vib")
    config["prune"]["schedule"]["start_epoch"] = 1
    config["vib"] = {"kl_weight": 0.05}
    snapshots = prune(config, base_model, tmp_path / "vib")
    loaded = load_model(snapshots / "sparsity50.pt")
    assert loaded.recognizer.encoder.config.unit_gates == "none"
    assert loaded.recognizer.encoder.config.lstm_hidden == [24]


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_result(tiny_corpus, base_model, tmp_path):
    config = prune_config(tiny_corpus, criterion="random")
    config["augment"] = None
    reference = prune(config, base_model, tmp_path / "straight")

    class Interrupt(Exception):
        pass

    class StopInSecondEpoch(L.Callback):
        """Crashes after the second pruning event, once the first epoch's checkpoint is written."""

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                raise Interrupt

    import pruning.job as job

    original_build = job.build_trainer

    def build_interrupted(config, exp_dir, callbacks, **overrides):
        return original_build(config, exp_dir, [*callbacks, StopInSecondEpoch()], **overrides)

    job.build_trainer = build_interrupted
    try:
        with pytest.raises(Interrupt):
            prune(config, base_model, tmp_path / "resumed")
    finally:
        job.build_trainer = original_build
    assert (tmp_path / "resumed" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "resumed" / "snapshots" / "sparsity50.pt").exists()
    resumed = prune(config, base_model, tmp_path / "resumed")
    summary = json.loads((tmp_path / "resumed" / "prune_summary.json").read_text())
    assert summary["resumed_from"] is not None
    first, second = load_model(reference / "sparsity50.pt"), load_model(resumed / "sparsity50.pt")
    assert first.recognizer.encoder.config == second.recognizer.encoder.config
    for name, weight in first.recognizer.state_dict().items():
        torch.testing.assert_close(second.recognizer.state_dict()[name], weight, rtol=1e-4, atol=1e-5)


def _write(config: dict, folder: Path) -> str:
    import yaml

    path = folder / "prune.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.slow
def test_prune_errors_name_the_culprit(tiny_corpus, base_model, tmp_path, capsys):
    config = _write(prune_config(tiny_corpus), tmp_path)
    missing = tmp_path / "nowhere.pt"
    assert main(["prune", str(missing), "--config", config, "--exp-dir", str(tmp_path / "a")]) == 2
    assert str(missing) in capsys.readouterr().err
    bad = ["--set", "prune.criterion=psychic"]
    assert main(["prune", str(base_model), "--config", config, "--exp-dir", str(tmp_path / "b"), *bad]) == 2
    assert "psychic" in capsys.readouterr().err
    bad = ["--set", "prune.schedule.target=1.5"]
    assert main(["prune", str(base_model), "--config", config, "--exp-dir", str(tmp_path / "c"), *bad]) == 2
    assert "target" in capsys.readouterr().err
