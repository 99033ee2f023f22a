"""End to end on a tiny corpus: training lowers the loss, checkpoints reload and decode, training resumes,
and bad audio in a manifest is named by the CLI instead of crashing inside a worker."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asr.audio import load_audio
from asr.checkpoint import load_model
from asr.data.manifest import Utterance, read_manifest, write_manifest
from asr.inference import Transcriber
from asr.metrics import error_counts
from asr.training import train
from speechprune.cli import main
from tests.conftest import tiny_config, write_bad_audio_files

EPOCHS = 20


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory) -> Path:
    exp_dir = tmp_path_factory.mktemp("exp")
    train(tiny_config(tiny_corpus, epochs=EPOCHS), exp_dir)
    return exp_dir


def _validation_losses(exp_dir: Path) -> list[float]:
    rows = list(csv.DictReader(open(next(exp_dir.glob("logs/version_*/metrics.csv")))))
    return [float(r["val_loss"]) for r in rows if r.get("val_loss")]


def test_training_lowers_the_loss_and_exports_a_model(trained, tiny_corpus):
    losses = _validation_losses(trained)
    assert len(losses) == EPOCHS
    assert losses[-1] < 0.6 * losses[0], losses
    summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["parameters"] > 0 and summary["best_val_wer"] is not None
    assert (trained / "model.pt").is_file() and (trained / "checkpoints" / "last.ckpt").is_file()
    assert (trained / "tokenizer.model").read_bytes() == tiny_corpus["tokenizer"].read_bytes()


def test_checkpoint_and_model_file_reload_and_decode(trained, tiny_corpus):
    checkpoint = next((trained / "checkpoints").glob("epoch*.ckpt"))
    from_checkpoint, from_model_file = load_model(checkpoint), load_model(trained / "model.pt")
    waveform = torch.randn(1, 8000) * 0.1
    lengths = torch.tensor([8000])
    with torch.inference_mode():
        assert torch.equal(
            from_checkpoint.recognizer(waveform, lengths)[0], from_model_file.recognizer(waveform, lengths)[0]
        )
    transcriber = Transcriber(trained / "model.pt", threads=1)
    utterances = read_manifest(tiny_corpus["test"])
    transcripts = transcriber.transcribe([load_audio(u.audio_filepath, 8000) for u in utterances])
    assert all(t.encoder_ms > 0 and len(t.token_frames) == len(t.token_ids) for t in transcripts)
    counts = error_counts([u.text for u in utterances], [t.text for t in transcripts])
    assert counts.cer < 0.5, [(t.text, u.text) for t, u in zip(transcripts, utterances, strict=True)]


def test_training_resumes_from_the_last_checkpoint(trained, tiny_corpus):
    train(tiny_config(tiny_corpus, epochs=EPOCHS + 1), trained)
    summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("last.ckpt")
    assert summary["epochs_completed"] == EPOCHS + 1


def test_evaluate_reports_bad_files_and_scores_the_rest(trained, tiny_corpus, tmp_path, capsys):
    bad = write_bad_audio_files(tmp_path / "bad")
    good = read_manifest(tiny_corpus["test"])[:4]
    manifest = tmp_path / "mixed.jsonl"
    write_manifest(manifest, good + [Utterance(str(p), 1.0, "one") for p in bad.values()])
    status = main(["evaluate", str(trained / "model.pt"), str(manifest), "--out", str(tmp_path / "eval")])
    assert status == 1
    err = capsys.readouterr().err
    for path in bad.values():
        assert path.name in err
    summary = json.loads((tmp_path / "eval" / "mixed.summary.json").read_text())
    assert summary["utterances"] == 4 and len(summary["bad_files"]) == 3
    assert 0.0 <= summary["wer"] and summary["real_time_factor"] > 0


def test_training_on_a_manifest_with_bad_audio_names_the_files(tiny_corpus, tmp_path, capsys):
    bad = write_bad_audio_files(tmp_path / "bad")
    manifest = tmp_path / "train_with_bad.jsonl"
    write_manifest(
        manifest,
        read_manifest(tiny_corpus["train"])[:5] + [Utterance(str(p), 1.0, "one") for p in bad.values()],
    )
    config_path = tmp_path / "config.json"  # JSON is YAML
    config = tiny_config(tiny_corpus, epochs=1)
    config["data"]["train_manifests"] = [str(manifest)]
    config_path.write_text(json.dumps(config))
    status = main(["train", "--config", str(config_path), "--exp-dir", str(tmp_path / "exp")])
    err = capsys.readouterr().err
    assert status == 2
    assert "3 unusable audio file(s)" in err and "Traceback" not in err
    for path in bad.values():
        assert path.name in err


def test_cli_names_a_bad_override(tmp_path, capsys):
    config_path = tmp_path / "c.yaml"
    config_path.write_text("model: {}\n")
    assert main(["train", "--config", str(config_path), "--exp-dir", str(tmp_path), "--set", "nokey"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_ddp_training_on_two_cpu_processes(tiny_corpus, tmp_path):
    """Lightning's own DDP (gloo on CPU) runs the CLI on two ranks: the sampler shards batches per rank
    and validation WER is reduced exactly across ranks."""
    config = tiny_config(tiny_corpus, epochs=1)
    config["trainer"].update({"strategy": "ddp", "devices": 2})
    config_path = tmp_path / "ddp.json"
    config_path.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "speechprune",
            "train",
            "--config",
            str(config_path),
            "--exp-dir",
            str(tmp_path / "exp"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Starting with 2 processes" in completed.stderr + completed.stdout
    assert (tmp_path / "exp" / "model.pt").is_file()
    rows = list(csv.DictReader(open(next((tmp_path / "exp").glob("logs/version_*/metrics.csv")))))
    assert any(r.get("val_wer") for r in rows)
