"""End to end on a tiny corpus: training lowers the loss, checkpoints reload and decode, training resumes,
and bad audio in a manifest is named by the CLI instead of crashing inside a worker."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from asr.audio import load_audio
from asr.checkpoint import load_model, save_model
from asr.data.datamodule import DataConfig, SpeechDataModule
from asr.data.fingerprint import audio_fingerprint
from asr.data.manifest import Utterance, read_manifest, write_manifest
from asr.data.sampler import BucketBatchSampler
from asr.metrics import blank_plateau, error_counts
from asr.models.lstm_ctc import count_parameters
from asr.tokenizer import Tokenizer
from asr.training import train
from asr.transcriber import Transcriber
from speechprune.cli import main
from tests.conftest import tiny_config, tiny_module, write_bad_audio_files

EPOCHS = 20
# What the 20-epoch tiny training reaches (seed 3): best val WER 0.33, last val loss 0.40 of 2.75 at epoch 0,
# test CER 0.20 / WER 0.50, and on the first 4 test utterances WER 0.40 (2 of 5 words). An untrained model
# of the same shape reads nothing right (WER >= 1, CER > 0.9), so each bound below fails for it.
LOSS_RATIO = 0.3
VAL_WER = 0.6
TEST_CER, TEST_WER = 0.4, 0.8
EVAL_WER, EVAL_CER = 0.6, 0.4


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory) -> Path:
    """A trained experiment folder; tests read it and never write into it (copy it to change it)."""
    exp_dir = tmp_path_factory.mktemp("exp")
    train(tiny_config(tiny_corpus, epochs=EPOCHS), exp_dir)
    return exp_dir


@pytest.fixture(scope="module")
def untrained(tiny_corpus, tmp_path_factory) -> Path:
    """The tiny model as initialized, exported like a trained one: what every accuracy bound must reject."""
    tokenizer = Tokenizer.load(tiny_corpus["tokenizer"])
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("untrained") / "model.pt"
    save_model(path, tiny_module(tokenizer).recognizer.eval(), tokenizer, metadata={})
    return path


def _metrics(exp_dir: Path, version: int = 0) -> list[dict[str, str]]:
    return list(csv.DictReader(open(exp_dir / "logs" / f"version_{version}" / "metrics.csv")))


def _validation(exp_dir: Path, version: int = 0, key: str = "val_loss") -> list[float]:
    return [float(r[key]) for r in _metrics(exp_dir, version) if r.get(key)]


def _test_set_errors(model: Path, utterances: list[Utterance]):
    transcripts = Transcriber(model, threads=1).transcribe(
        [load_audio(u.audio_filepath, 8000) for u in utterances]
    )
    return transcripts, error_counts([u.text for u in utterances], [t.text for t in transcripts])


@pytest.mark.slow
def test_training_lowers_the_loss_and_exports_a_model(trained, tiny_corpus):
    assert sorted(p.name for p in (trained / "logs").iterdir()) == ["version_0"]
    losses = _validation(trained)
    assert len(losses) == EPOCHS
    assert losses[-1] < LOSS_RATIO * losses[0], losses
    wers = _validation(trained, key="val_wer")
    summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["best_val_wer"] == pytest.approx(min(wers)) and min(wers) < VAL_WER < wers[0], wers
    assert summary["epochs_completed"] == EPOCHS and summary["resumed_from"] is None
    assert summary["epochs_planned_for_max_time"] is None  # no max_time: the configured epochs
    best_epoch = wers.index(min(wers))
    assert Path(summary["best_checkpoint"]).name.startswith(f"epoch{best_epoch:03d}-")
    exported = load_model(trained / "model.pt").recognizer
    fresh = tiny_module(Tokenizer.load(tiny_corpus["tokenizer"])).recognizer.encoder
    assert summary["parameters"] == count_parameters(exported.encoder) == count_parameters(fresh)
    assert summary["train_audio_sha256"] == audio_fingerprint(read_manifest(tiny_corpus["train"]))
    assert summary["valid_audio_sha256"] == audio_fingerprint(read_manifest(tiny_corpus["valid"]))
    assert summary["export_checkpoint"] == "best"
    # the exported checkpoint's own validation errors, by kind, add up to its validation WER
    errors = summary["exported_val_errors"]
    assert errors["words"] == sum(len(u.text.split()) for u in read_manifest(tiny_corpus["valid"]))
    kinds = errors["substitutions"] + errors["deletions"] + errors["insertions"]
    assert kinds / errors["words"] == pytest.approx(summary["best_val_wer"])
    assert summary["exported_checkpoint"] == summary["best_checkpoint"]
    _assert_same_weights(exported, load_model(summary["best_checkpoint"]).recognizer)
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    assert (trained / "tokenizer.model").read_bytes() == tiny_corpus["tokenizer"].read_bytes()


def _assert_same_weights(model: torch.nn.Module, other: torch.nn.Module) -> None:
    weights = other.state_dict()
    assert model.state_dict().keys() == weights.keys()
    for name, weight in model.state_dict().items():
        assert torch.equal(weights[name], weight), name


@pytest.mark.slow
def test_export_checkpoint_last_exports_the_end_of_training(trained, tiny_corpus, tmp_path):
    """The finished run resumed with ``export_checkpoint: last`` trains nothing and exports last.ckpt,
    which is not the best epoch of this fixture, so a choice ignored would export other weights."""
    exp_dir = tmp_path / "exp"
    shutil.copytree(trained, exp_dir)
    wers = _validation(trained, key="val_wer")
    assert wers.index(min(wers)) < EPOCHS - 1, wers  # the fixture's best epoch is not its last
    config = {**tiny_config(tiny_corpus, epochs=EPOCHS), "export_checkpoint": "last"}
    exported = load_model(train(config, exp_dir)).recognizer
    summary = json.loads((exp_dir / "train_summary.json").read_text())
    last = exp_dir / "checkpoints" / "last.ckpt"
    assert summary["export_checkpoint"] == "last" and summary["exported_checkpoint"] == str(last.resolve())
    # the best is still named (its score is not reloaded here: Lightning keeps it only in the same folder)
    trained_summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["best_checkpoint"] == trained_summary["best_checkpoint"]
    _assert_same_weights(exported, load_model(last).recognizer)
    best = load_model(trained / "model.pt").recognizer.state_dict()
    assert any(not torch.equal(best[name], w) for name, w in exported.state_dict().items())


def test_an_unknown_export_checkpoint_is_refused_before_training(tiny_corpus, tmp_path, capsys):
    config_path = tmp_path / "config.json"  # JSON is YAML
    config_path.write_text(json.dumps({**tiny_config(tiny_corpus, epochs=1), "export_checkpoint": "final"}))
    assert main(["train", "--config", str(config_path), "--exp-dir", str(tmp_path / "exp")]) != 0
    err = capsys.readouterr().err
    assert "export_checkpoint" in err and "'final'" in err and "Traceback" not in err
    assert not (tmp_path / "exp").exists()


@pytest.mark.slow
def test_checkpoint_and_model_file_reload_and_decode(trained, tiny_corpus, untrained):
    checkpoint = next((trained / "checkpoints").glob("epoch*.ckpt"))
    from_checkpoint, from_model_file = load_model(checkpoint), load_model(trained / "model.pt")
    waveform = torch.randn(1, 8000) * 0.1
    lengths = torch.tensor([8000])
    with torch.inference_mode():
        assert torch.equal(
            from_checkpoint.recognizer(waveform, lengths)[0], from_model_file.recognizer(waveform, lengths)[0]
        )
    utterances = read_manifest(tiny_corpus["test"])
    transcripts, counts = _test_set_errors(trained / "model.pt", utterances)
    assert all(t.encoder_ms > 0 and len(t.token_frames) == len(t.token_ids) for t in transcripts)
    texts = [(t.text, u.text) for t, u in zip(transcripts, utterances, strict=True)]
    assert counts.cer < TEST_CER and counts.wer < TEST_WER, texts
    _, random_counts = _test_set_errors(untrained, utterances)
    assert random_counts.cer >= TEST_CER and random_counts.wer >= TEST_WER  # the bounds mean something


@pytest.mark.slow
def test_training_resumes_from_the_last_checkpoint(trained, tiny_corpus, tmp_path):
    exp_dir = tmp_path / "exp"
    shutil.copytree(trained, exp_dir)
    first_losses = _validation(exp_dir)
    train(tiny_config(tiny_corpus, epochs=EPOCHS + 1), exp_dir)
    summary = json.loads((exp_dir / "train_summary.json").read_text())
    assert summary["resumed_from"] == str(exp_dir / "checkpoints" / "last.ckpt")
    assert summary["epochs_completed"] == EPOCHS + 1
    # the resumed run trains only the missing epoch, from the trained weights (a restart from scratch would
    # begin near first_losses[0])
    assert [int(r["epoch"]) for r in _metrics(exp_dir, version=1) if r.get("val_loss")] == [EPOCHS]
    resumed = _validation(exp_dir, version=1)
    assert resumed[0] < LOSS_RATIO * first_losses[0], (resumed, first_losses)
    assert json.loads((trained / "train_summary.json").read_text())["epochs_completed"] == EPOCHS  # untouched


def test_last_checkpoint_holds_the_latest_epoch(tiny_corpus, tmp_path):
    """With lr 0 the validation WER never improves after epoch 0; last.ckpt must still be epoch 1's (with
    Lightning's save_last=True alone it stays at the last improving epoch: a resumed run repeats epochs)."""
    config = tiny_config(tiny_corpus, epochs=2)
    config["optim"]["lr"] = 0.0
    config["data"]["train_manifests"] = [str(tmp_path / "few.jsonl")]
    config["data"]["valid_manifest"] = str(tmp_path / "few.jsonl")
    write_manifest(tmp_path / "few.jsonl", read_manifest(tiny_corpus["train"])[:4])
    train(config, tmp_path / "exp")
    last = torch.load(tmp_path / "exp" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 1


def test_a_model_left_on_the_blank_plateau_is_flagged(trained, tiny_corpus, tmp_path, capsys):
    """lr 0 keeps the model where it started: validation WER >= 100%. ``--fail-on-plateau`` makes that
    exit 1 (the model is still written); without it the same finding is a warning and exit 0. The trained
    fixture's summary is the control that the check does not flag a model that learned."""
    config = tiny_config(tiny_corpus, epochs=1)
    config["optim"]["lr"] = 0.0
    write_manifest(tmp_path / "few.jsonl", read_manifest(tiny_corpus["train"])[:4])
    config["data"]["train_manifests"] = [str(tmp_path / "few.jsonl")]
    config["data"]["valid_manifest"] = str(tmp_path / "few.jsonl")
    config_path = tmp_path / "config.json"  # JSON is YAML
    config_path.write_text(json.dumps(config))
    command = ["train", "--config", str(config_path), "--exp-dir", str(tmp_path / "exp")]

    assert main([*command, "--fail-on-plateau"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "blank plateau" in err and "Traceback" not in err
    assert (tmp_path / "exp" / "model.pt").is_file()
    assert main(command) == 0  # the finished run resumes, has nothing left to train, and warns
    assert "warning:" in capsys.readouterr().err
    assert not blank_plateau(json.loads((trained / "train_summary.json").read_text()))


@pytest.mark.slow
def test_evaluate_reports_bad_files_and_scores_the_rest(trained, tiny_corpus, untrained, tmp_path, capsys):
    bad = write_bad_audio_files(tmp_path / "bad")
    good = read_manifest(tiny_corpus["test"])[:4]
    manifest = tmp_path / "mixed.jsonl"
    write_manifest(manifest, good + [Utterance(str(p), 1.0, "one") for p in bad.values()])

    printed = {}

    def evaluate(model: Path, out: str) -> dict:
        status = main(["evaluate", str(model), str(manifest), "--out", str(tmp_path / out)])
        assert status == 1
        captured = capsys.readouterr()
        for path in bad.values():
            assert path.name in captured.err
        printed[out] = captured.out
        return json.loads((tmp_path / out / "mixed.summary.json").read_text())

    summary = evaluate(trained / "model.pt", "eval")
    assert summary["utterances"] == 4 and len(summary["bad_files"]) == 3
    assert summary["words"] == sum(len(u.text.split()) for u in good) == 5
    assert summary["wer"] == pytest.approx(summary["word_errors"] / summary["words"])
    kinds = (summary["substitutions"], summary["deletions"], summary["insertions"])
    assert sum(kinds) == summary["word_errors"]
    rows = list(csv.DictReader((tmp_path / "eval" / "mixed.utterances.csv").open()))
    kind_names = ("substitutions", "deletions", "insertions")
    assert sum(int(r[kind]) for r in rows for kind in kind_names) == sum(kinds)
    assert summary["wer"] <= EVAL_WER and summary["cer"] < EVAL_CER, summary
    audio_seconds = sum(load_audio(u.audio_filepath, 8000).shape[0] for u in good) / 8000
    assert summary["audio_seconds"] == pytest.approx(audio_seconds, abs=0.01)
    assert 0 < summary["real_time_factor"] < 1
    assert summary["parameters"] == json.loads((trained / "train_summary.json").read_text())["parameters"]
    assert summary["decoder"] == "greedy"
    assert summary["audio_sha256"] == audio_fingerprint(good)  # what was scored: the 4 readable files
    untrained_summary = evaluate(untrained, "eval_untrained")
    # the bounds mean something: the untrained model fails them
    assert untrained_summary["wer"] > EVAL_WER and untrained_summary["cer"] >= EVAL_CER
    # its errors are told by kind, with the most frequent ones, in the summary and on the command line
    frequent = untrained_summary["frequent_errors"]
    for kind in ("substitutions", "deletions", "insertions"):
        assert sum(e["count"] for e in frequent[kind]) <= untrained_summary[kind]
        assert bool(frequent[kind]) == (untrained_summary[kind] > 0)
    line = (
        f"(S {untrained_summary['substitutions']} / D {untrained_summary['deletions']} / "
        f"I {untrained_summary['insertions']})"
    )
    assert line in printed["eval_untrained"] and "most frequent: " in printed["eval_untrained"]


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


@pytest.mark.slow
def test_ddp_training_on_two_cpu_processes(tiny_corpus, tmp_path):
    """Lightning's own DDP (gloo on CPU) runs the CLI on two ranks, and the sampler shards batches per rank:
    each rank steps through half of the epoch's batches."""
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
    single_process_batches = len(_sampler(tiny_corpus["train"], world_size=1, rank=0, shuffle=True))
    last = torch.load(tmp_path / "exp" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == math.ceil(single_process_batches / 2) > 1
    wers = _validation(tmp_path / "exp", key="val_wer")
    assert len(wers) == 1 and 0.0 <= wers[0] <= 1.0  # one epoch: the model still reads (almost) nothing


def _sampler(manifest: Path, world_size: int, rank: int, shuffle: bool) -> BucketBatchSampler:
    """The batches the tiny config's data module gives ``rank`` of ``world_size``."""
    return BucketBatchSampler(
        [u.duration for u in read_manifest(manifest)],
        max_batch_seconds=8.0,
        shuffle=shuffle,
        num_replicas=world_size,
        rank=rank,
    )


def test_ddp_validation_scores_every_utterance_once(tiny_corpus):
    """Padding ranks to equal batch counts (needed in training) would score some validation utterances
    twice; the validation loaders of two ranks must together score each exactly once."""
    data = DataConfig(
        train_manifests=[str(tiny_corpus["train"])],
        valid_manifest=str(tiny_corpus["valid"]),
        max_batch_seconds=8.0,
        num_workers=0,
    )
    scored = []
    for rank in range(2):
        datamodule = SpeechDataModule(data, Tokenizer.load(tiny_corpus["tokenizer"]), 8000)
        datamodule.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        datamodule.setup("validate")
        scored += [index for batch in datamodule.val_dataloader().batch_sampler for index in batch]
    assert sorted(scored) == list(range(len(read_manifest(tiny_corpus["valid"]))))


def test_each_epoch_draws_its_own_batches_in_a_fit_and_after_a_resume(tiny_corpus, tmp_path):
    """Lightning never tells a batch sampler the epoch, and draws a resumed fit's first batches before it
    restores its loops: the data module gives its sampler the epoch (from its own checkpoint state until
    then), so a fit's epochs differ, each is the sampler's order for that epoch, and a resumed fit goes on
    with the next epoch's order."""
    import lightning as L

    from asr.training import build_trainer, latest_checkpoint

    data = DataConfig(
        train_manifests=[str(tiny_corpus["train"])],
        valid_manifest=str(tiny_corpus["valid"]),
        max_batch_seconds=8.0,
        num_workers=0,
        seed=5,
    )
    seen: list[list[list[int]]] = []

    class Recorder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def on_train_epoch_start(self) -> None:
            seen.append([])

        def training_step(self, batch, index: int) -> torch.Tensor:
            seen[-1].append(list(batch.indices))
            return self.weight.sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            # as CTCModule's schedule does: this draws the first batches before a resume restores the loops
            assert self.trainer.estimated_stepping_batches > 0
            return torch.optim.SGD(self.parameters(), lr=0.0)

        def validation_step(self, batch, index: int) -> None:
            """Validated each epoch, as training is: last.ckpt is then written from inside the epoch."""

    def fit(epochs: int, resume: Path | None = None) -> None:
        options = {"max_epochs": epochs, "enable_progress_bar": False}
        trainer = build_trainer({"trainer": options}, tmp_path, [latest_checkpoint(tmp_path)])
        datamodule = SpeechDataModule(data, Tokenizer.load(tiny_corpus["tokenizer"]), 8000)
        trainer.fit(Recorder(), datamodule=datamodule, ckpt_path=resume)

    fit(2)
    fit(3, resume=tmp_path / "checkpoints" / "last.ckpt")

    durations = [u.duration for u in read_manifest(tiny_corpus["train"])]
    expected = []
    for epoch in range(3):
        sampler = BucketBatchSampler(durations, max_batch_seconds=8.0, seed=5)
        sampler.set_epoch(epoch)
        expected.append(list(sampler))
    assert seen == expected
    assert expected[0] != expected[1] != expected[2]
