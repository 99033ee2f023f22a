"""Self-adaptation: transcripts ranked by their least certain unit, the most confident fine-tuned on (their
text, never a reference), and the adapted file a normal model; bad input refused or reported. (Whether it
helps a new voice is measured on the leave-one-speaker-out folds, docs/new_voices.md.)"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asr import self_adaptation
from asr.augment import AugmentConfig
from asr.checkpoint import load_model
from asr.data.datamodule import DataConfig, SpeechDataModule
from asr.data.manifest import Utterance, read_manifest, write_manifest
from asr.self_adaptation import (
    SELF_ADAPTATION_KEY,
    PseudoLabel,
    SelfAdaptationConfig,
    most_confident,
    pseudo_labels,
    self_adapt_model_file,
)
from asr.tokenizer import Tokenizer
from common.errors import SpeechpruneError
from speechprune.cli import main

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "fsdd_digits"


def _recordings(tiny_corpus) -> list[str]:
    """40 strings of the tiny corpus (no transcripts are read): more than the 20 adaptation needs."""
    splits = ("test_speaker", "test", "valid")
    return [u.audio_filepath for split in splits for u in read_manifest(tiny_corpus[split])]


def _speaker_audio(loaded, tiny_corpus, text: str = "") -> tuple[list[Utterance], list[torch.Tensor]]:
    """The 40 recordings as :func:`asr.self_adaptation.self_adapt` takes them, every text ``text``."""
    rate, paths = loaded.recognizer.sample_rate, _recordings(tiny_corpus)
    waveforms = [self_adaptation.load_audio(path, rate) for path in paths]
    utterances = [Utterance(path, w.shape[0] / rate, text) for path, w in zip(paths, waveforms, strict=True)]
    return utterances, waveforms


def test_confidence_is_the_least_certain_emitted_unit(monkeypatch, tiny_corpus):
    tokenizer = Tokenizer.load(tiny_corpus["tokenizer"])
    blank = tokenizer.blank_id

    def frames(*posteriors: tuple[int, float]) -> torch.Tensor:
        """One frame per (unit, posterior), the rest of each frame's mass spread over the other units."""
        rows = torch.empty(len(posteriors), tokenizer.vocab_size)
        for row, (unit, posterior) in zip(rows, posteriors, strict=True):
            row.fill_((1 - posterior) / (tokenizer.vocab_size - 1))
            row[unit] = posterior
        return rows.log()

    units = tokenizer.encode("one two")
    doubtful = len(units) // 2
    spoken = [(blank, 0.99)]
    for index, unit in enumerate(units):  # each unit on two frames, then a blank frame (posterior 0.6)
        spoken += [(unit, 0.4), (unit, 0.55)] if index == doubtful else [(unit, 0.9), (unit, 0.45)]
        spoken.append((blank, 0.6))
    emissions = [frames(*spoken), frames((blank, 0.99), (blank, 0.7))]  # the second emits nothing
    monkeypatch.setattr(self_adaptation, "encode_each", lambda recognizer, waveforms: emissions)
    labels = pseudo_labels(torch.nn.Identity(), tokenizer, [torch.zeros(1)] * 2)
    assert labels[0].text == "one two"
    # the doubtful unit at its peak (0.55): not a sure unit's weak edge frame (0.45), a mean, or a blank
    assert labels[0].confidence == pytest.approx(0.55)
    assert labels[1] == PseudoLabel("", 0.0)


@pytest.mark.parametrize(
    ("confidences", "keep", "chosen"),
    [
        ([0.5, 0.9, 0.7, 0.2], 0.5, [1, 2]),
        ([0.5, 0.9, 0.7, 0.2], 1.0, [1, 2, 0, 3]),
        ([0.5, 0.9, 0.7, 0.2], 0.1, [1]),  # at least one
    ],
)
def test_the_most_confident_transcripts_are_kept(confidences, keep, chosen):
    labels = [PseudoLabel("one", c) for c in confidences]
    assert most_confident(labels, keep) == chosen


def test_empty_transcripts_are_never_kept():
    labels = [PseudoLabel("", 0.99), PseudoLabel("one", 0.3), PseudoLabel(" ", 0.98)]
    assert most_confident(labels, 1.0) == [1]
    assert most_confident([PseudoLabel("", 0.9)], 1.0) == []


def test_fine_tuning_learns_the_model_transcripts_not_the_references(monkeypatch, base_model, tiny_corpus):
    seen = {}
    real = SpeechDataModule.from_utterances

    def record(train, *args, **kwargs):  # the data the fine-tuning really reads
        seen["training"] = list(train)
        return real(train, *args, **kwargs)

    monkeypatch.setattr(self_adaptation.SpeechDataModule, "from_utterances", record)
    recordings = _recordings(tiny_corpus)
    loaded = load_model(base_model)
    # a reference the code must never read: every utterance's text is this sentinel
    utterances, waveforms = _speaker_audio(loaded, tiny_corpus, "SENTINEL")
    labels = pseudo_labels(loaded.recognizer, loaded.tokenizer, waveforms)
    config = SelfAdaptationConfig(epochs=1, rounds=1)
    adapted, returned, kept = self_adaptation.self_adapt(
        loaded, utterances, waveforms, AugmentConfig(), config
    )
    training = seen["training"]
    assert returned == labels and kept == most_confident(labels, 0.7) and len(kept) == len(training) == 28
    assert [u.audio_filepath for u in training] == [recordings[i] for i in kept]
    assert [u.text for u in training] == [labels[i].text for i in kept]
    assert all(u.text != "SENTINEL" for u in training)
    references = {
        u.audio_filepath: u.text
        for s in ("test_speaker", "test", "valid")
        for u in read_manifest(tiny_corpus[s])
    }
    # the tiny model errs on some kept strings: had the references been read, these would differ
    assert any(labels[i].text != references[recordings[i]] for i in kept)
    before = loaded.recognizer.state_dict()
    assert any(not torch.equal(before[name], weight) for name, weight in adapted.state_dict().items())


def test_adapted_file_is_a_normal_model_that_records_its_adaptation(
    base_model, tiny_corpus, tmp_path, capsys
):
    adapted_path = tmp_path / "self.pt"
    recordings = _recordings(tiny_corpus)
    command = ["self-adapt", str(base_model), *recordings, "--out", str(adapted_path), "--epochs", "1"]
    assert main(command) == 0
    assert f"{adapted_path}: fine-tuned on the model's transcripts of 28 of 40 recordings" in (
        capsys.readouterr().out
    )
    original, adapted = load_model(base_model), load_model(adapted_path)  # digest checked on load
    record = adapted.metadata[SELF_ADAPTATION_KEY]
    assert record["recordings"] == 40 and record["kept"] == 28 and record["too_long"] == 0
    assert record["original_metadata"] == original.metadata
    assert not set(adapted.metadata) - {SELF_ADAPTATION_KEY}  # no validation score of other weights
    assert record["config"]["epochs"] == 1 and record["adapted_from"] == str(base_model)
    assert 0 < record["min_confidence"] <= record["mean_confidence_kept"] <= 1
    before, after = original.recognizer.state_dict(), adapted.recognizer.state_dict()
    assert before.keys() == after.keys()
    assert all(before[name].shape == after[name].shape for name in before)  # same layers
    assert any(not torch.equal(before[name], after[name]) for name in before)  # new weights
    assert all(math.isfinite(float(weight.abs().sum())) for weight in after.values())
    out = tmp_path / "eval"
    assert main(["evaluate", str(adapted_path), str(tiny_corpus["test_speaker"]), "--out", str(out)]) == 0
    with pytest.raises(SpeechpruneError, match="already self-adapted"):
        self_adapt_model_file(adapted_path, recordings, tmp_path / "twice.pt", AugmentConfig())


def test_bad_files_are_skipped_and_reported(base_model, tiny_corpus, tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not audio")
    adapted_path = tmp_path / "self.pt"
    recordings = [*_recordings(tiny_corpus), str(broken)]
    command = ["self-adapt", str(base_model), *recordings, "--out", str(adapted_path), "--epochs", "1"]
    assert main(command) == 1
    captured = capsys.readouterr()
    assert f"skipped {broken}" in captured.err
    assert "28 of 40 recordings" in captured.out  # the good ones adapted the model all the same
    assert load_model(adapted_path).metadata[SELF_ADAPTATION_KEY]["recordings"] == 40


def test_bad_input_is_refused_before_any_work(base_model, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "x.pt"
    few = _recordings(tiny_corpus)[:5]
    assert main(["self-adapt", str(base_model), *few, "--out", str(out)]) != 0
    assert "at least 20 recordings" in capsys.readouterr().err
    missing = tmp_path / "nowhere"
    assert main(["self-adapt", str(base_model), str(missing), "--out", str(out)]) != 0
    assert str(missing) in capsys.readouterr().err
    assert main(["self-adapt", str(tmp_path / "no_model.pt"), *few, "--out", str(out)]) != 0
    assert "no_model.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["self-adapt", str(base_model), *few, "--out", str(out), "--keep", "1.5"])
    assert not out.exists()  # nothing written for work not done
    with pytest.raises(ValueError, match="keep_fraction"):
        SelfAdaptationConfig(keep_fraction=0.0)


def test_loso_script_adapts_each_fold_and_scores_both_models(base_model, tiny_corpus, tmp_path):
    """``local/loso_voice_enrolment.py --method self`` on a fold whose held-out manifest holds 40 strings:
    20 adapt (their text unread), the other 20 and the probe score the adapted and the plain model."""
    manifest = tmp_path / "held_out.jsonl"
    utterances = [u for split in ("test_speaker", "test", "valid") for u in read_manifest(tiny_corpus[split])]
    write_manifest(manifest, utterances)
    fold = tmp_path / "exp" / "run" / "carol"
    (fold / "eval").mkdir(parents=True)
    shutil.copy(base_model, fold / "model.pt")
    (fold / "train_summary.json").write_text(json.dumps({"epochs_completed": 8}))
    probe = tmp_path / "test_speaker_tight.jsonl"  # evaluate names its summaries after the manifests
    write_manifest(probe, read_manifest(tiny_corpus["test_speaker"]))
    for name, scored in (("test_speaker", manifest), ("test_speaker_tight", probe)):
        summary = {"manifest": str(scored)}
        (fold / "eval" / f"{name}.summary.json").write_text(json.dumps(summary))
    script = RECIPE / "local" / "loso_voice_enrolment.py"
    command = [sys.executable, str(script), str(fold.parent), "--enrol", "20", "--method", "self"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "carol: fine-tuned on 14 of 20 transcripts" in done.stdout
    adapted = tmp_path / "exp" / "run_enrol20_self" / "carol"
    plain = tmp_path / "exp" / "run_enrol20_plain" / "carol"
    assert load_model(adapted / "model_self.pt").metadata[SELF_ADAPTATION_KEY]["recordings"] == 20
    assert json.loads((adapted / "self_adaptation.json").read_text())["kept"] == 14
    for run in (adapted, plain):
        rest = json.loads((run / "eval" / "test_speaker.summary.json").read_text())
        assert rest["utterances"] == 20  # the strings not adapted on
        assert json.loads((run / "eval" / "test_speaker_tight.summary.json").read_text())["utterances"] == 12
    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "carol: done before, skipped" in again.stdout


def test_recordings_too_long_to_train_on_are_left_out(monkeypatch, base_model, tiny_corpus, tmp_path):
    monkeypatch.setattr(
        self_adaptation, "_fine_tune", lambda loaded, training, augment, config, progress: loaded.recognizer
    )
    recordings = _recordings(tiny_corpus)
    loaded = load_model(base_model)
    utterances, waveforms = _speaker_audio(loaded, tiny_corpus)
    cut = sorted(u.duration for u in utterances)[len(utterances) // 2]  # about half are longer
    config = SelfAdaptationConfig(max_seconds=cut)
    _, labels, kept = self_adaptation.self_adapt(loaded, utterances, waveforms, AugmentConfig(), config)
    assert all((label is None) == (u.duration > cut) for label, u in zip(labels, utterances, strict=True))
    for i in (i for i, label in enumerate(labels) if label is not None):  # each label is its own recording's
        assert labels[i] == pseudo_labels(loaded.recognizer, loaded.tokenizer, [waveforms[i]])[0]
    assert kept and all(utterances[i].duration <= cut for i in kept)
    with pytest.raises(
        SpeechpruneError, match=r"at least 20 recordings .* of 0.1 s or less, got 0 \(40 longer\)"
    ):
        self_adapt_model_file(
            base_model, recordings, tmp_path / "x.pt", AugmentConfig(), SelfAdaptationConfig(max_seconds=0.1)
        )
    assert not (tmp_path / "x.pt").exists()


def test_a_datamodule_without_validation_only_when_built_from_utterances(tiny_corpus):
    tokenizer = Tokenizer.load(tiny_corpus["tokenizer"])
    config = DataConfig(train_manifests=[str(tiny_corpus["train"])])  # no valid_manifest
    with pytest.raises(SpeechpruneError):  # train and prune still need one
        SpeechDataModule(config, tokenizer, 8000).setup("fit")
    utterances = read_manifest(tiny_corpus["test"])
    module = SpeechDataModule.from_utterances(utterances, config, tokenizer, 8000)
    module.setup("fit")
    assert module.train_utterances == utterances and module.valid_utterances == []


def test_each_round_transcribes_with_the_model_the_last_one_adapted(monkeypatch, base_model, tiny_corpus):
    transcriptions, trained_on = [], []
    real_labels, real_data = self_adaptation.pseudo_labels, SpeechDataModule.from_utterances

    def labels_spy(recognizer, tokenizer, waveforms):
        transcriptions.append((recognizer, real_labels(recognizer, tokenizer, waveforms)))
        return transcriptions[-1][1]

    def data_spy(train, *args, **kwargs):
        trained_on.append([u.text for u in train])
        return real_data(train, *args, **kwargs)

    monkeypatch.setattr(self_adaptation, "pseudo_labels", labels_spy)
    monkeypatch.setattr(self_adaptation.SpeechDataModule, "from_utterances", data_spy)
    loaded = load_model(base_model)
    utterances, waveforms = _speaker_audio(loaded, tiny_corpus)
    config = SelfAdaptationConfig(epochs=1, rounds=2)
    adapted, labels, kept = self_adaptation.self_adapt(loaded, utterances, waveforms, AugmentConfig(), config)
    assert len(transcriptions) == len(trained_on) == 2
    (first_model, _), (second_model, second) = transcriptions
    assert first_model is loaded.recognizer and second_model is not loaded.recognizer  # round 1's result
    assert labels == second and trained_on[1] == [second[i].text for i in kept]
    assert adapted is not second_model  # round 2 fine-tuned it further


def test_transcribe_can_adapt_to_its_inputs_first(base_model, tiny_corpus, tmp_path, capsys):
    adapted, out, again = tmp_path / "me.pt", tmp_path / "out.jsonl", tmp_path / "again.jsonl"
    recordings = _recordings(tiny_corpus)
    command = ["transcribe", str(base_model), *recordings, "--format", "jsonl"]
    assert main([*command, "--self-adapt", str(adapted), "--out", str(out)]) == 0
    assert (
        f"{adapted}: adapted to these recordings (fine-tuned on 28 of the model's 40"
        in capsys.readouterr().err
    )
    assert load_model(adapted).metadata[SELF_ADAPTATION_KEY]["recordings"] == 40
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["path"] for row in rows] == recordings
    # what was written is the adapted model's transcript of each file
    assert main(["transcribe", str(adapted), *recordings, "--format", "jsonl", "--out", str(again)]) == 0
    assert [row["text"] for row in rows] == [
        json.loads(line)["text"] for line in again.read_text().splitlines()
    ]

    export = tmp_path / "export"
    export.mkdir()
    assert main(["transcribe", str(export), *recordings, "--self-adapt", str(tmp_path / "x.pt")]) != 0
    assert "export folder" in capsys.readouterr().err
    assert main(["transcribe", str(base_model), *recordings[:5], "--self-adapt", str(tmp_path / "x.pt")]) != 0
    assert "at least 20 recordings" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_a_checkpoint_with_vibnet_gates_is_refused_before_any_work(monkeypatch, base_model, tiny_corpus):
    def never(*args, **kwargs):
        raise AssertionError("transcribed a model that is refused")

    monkeypatch.setattr(self_adaptation, "pseudo_labels", never)
    loaded = load_model(base_model)
    encoder = loaded.recognizer.encoder
    encoder.config = dataclasses.replace(encoder.config, unit_gates="vib")  # as a VIBNet pruning .ckpt
    utterances, waveforms = _speaker_audio(loaded, tiny_corpus)
    with pytest.raises(SpeechpruneError, match="VIBNet unit gates"):
        self_adaptation.self_adapt(loaded, utterances, waveforms, AugmentConfig())
