"""Voice adaptation: a warped filterbank computes exactly what VTLP's spectrum warp computes, the fit scores
every factor with the warped model and keeps a warp only when it clearly wins, and the adapted file is a
normal model everywhere a model runs. (Whether it helps on speech is measured on the leave-one-speaker-out
folds, docs/new_voices.md: the tone digits here have no vocal tract to normalize.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from asr import voice_warp
from asr.checkpoint import load_model
from asr.data.manifest import read_manifest
from asr.inference import EvaluationAudio, ctc_loss, encode_batched, load_evaluation_audio
from asr.voice_warp import (
    VOICE_WARP_KEY,
    adapt_model_file,
    fit_voice_warp,
    warp_recognizer,
)
from common.errors import SpeechpruneError
from speechprune.cli import main

FACTORS = (0.91, 0.94, 0.97, 1.0, 1.03, 1.06, 1.09)


@pytest.mark.parametrize("factor", [0.9, 1.07])
def test_warped_filterbank_equals_warping_the_spectrum(base_model, factor):
    recognizer = load_model(base_model).recognizer
    waveforms = 0.1 * torch.randn(2, 6000, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([6000, 4100])
    expected, expected_lengths = recognizer.features(
        waveforms, lengths, warp_factors=torch.full((2,), factor)
    )
    adapted, adapted_lengths = warp_recognizer(recognizer, factor).features(waveforms, lengths)
    assert torch.equal(adapted_lengths, expected_lengths)
    torch.testing.assert_close(adapted, expected, atol=2e-5, rtol=0)
    assert not torch.allclose(adapted, recognizer.features(waveforms, lengths)[0], atol=1e-2)


def test_factor_one_leaves_the_model_as_it_was(base_model):
    recognizer = load_model(base_model).recognizer
    unwarped = warp_recognizer(recognizer, 1.0).features.mel_scale.fb
    assert torch.equal(unwarped, recognizer.features.mel_scale.fb)
    assert warp_recognizer(recognizer, 0.9) is not recognizer  # a copy: the original keeps its filterbank


def test_fit_scores_each_factor_with_the_warped_model(base_model, tiny_corpus):
    loaded = load_model(base_model)
    enrolment = load_evaluation_audio(tiny_corpus["test_speaker"], loaded.recognizer.sample_rate)
    fit = fit_voice_warp(loaded.recognizer, loaded.tokenizer, enrolment, FACTORS)
    assert fit.utterances == len(enrolment.waveforms) > 0
    assert set(fit.losses) == set(FACTORS)
    for factor in (0.94, 1.0, 1.06):
        emissions = encode_batched(warp_recognizer(loaded.recognizer, factor), enrolment.waveforms)
        expected = ctc_loss(emissions, enrolment.references, loaded.tokenizer)
        assert fit.losses[factor] == pytest.approx(expected)
    assert len(set(fit.losses.values())) == len(FACTORS)  # each factor changed what the model heard


@pytest.mark.parametrize(
    ("losses", "chosen"),
    [
        ({0.9: 0.90, 1.0: 1.00, 1.1: 0.97}, 0.9),  # clearly lower: taken
        ({0.9: 0.96, 1.0: 1.00, 1.1: 1.20}, 1.0),  # 4% lower: noise on a few recordings, unwarped kept
        ({0.9: 0.80, 0.95: 0.80, 1.0: 1.00}, 0.95),  # a tie goes to the smaller warp
        ({0.9: 1.10, 1.0: 1.00, 1.1: 1.30}, 1.0),
    ],
)
def test_a_warp_replaces_the_unwarped_model_only_when_clearly_better(monkeypatch, losses, chosen):
    # each "warped model" is its factor, and its enrolment loss the one given: only the rule is under test
    monkeypatch.setattr(voice_warp, "warp_recognizer", lambda recognizer, factor: factor)
    monkeypatch.setattr(voice_warp, "encode_batched", lambda factor, waveforms: factor)
    monkeypatch.setattr(voice_warp, "ctc_loss", lambda factor, references, tokenizer: losses[factor])
    audio = EvaluationAudio([], [torch.zeros(4000)], ["one"])
    fit = fit_voice_warp(None, None, audio, tuple(losses))
    assert fit.factor == chosen
    assert fit.losses == losses
    assert fit.lowest == min(losses, key=lambda factor: (losses[factor], abs(factor - 1)))
    assert fit.relative_gain() == pytest.approx(1 - losses[chosen] / losses[1.0])


def test_adapted_file_runs_everywhere_and_records_its_warp(
    monkeypatch, base_model, tiny_corpus, tmp_path, capsys
):
    # the tiny tone model gains under 5% from any warp (so 1.0 would be kept): fix the fit at 0.94
    real_fit = voice_warp.fit_voice_warp

    def fit_at_094(recognizer, tokenizer, enrolment, factors):
        return dataclasses.replace(real_fit(recognizer, tokenizer, enrolment, factors), factor=0.94)

    monkeypatch.setattr(voice_warp, "fit_voice_warp", fit_at_094)
    adapted_path = tmp_path / "voice.pt"
    factors = [str(factor) for factor in FACTORS]
    enrolment = str(tiny_corpus["test_speaker"])
    assert (
        main(["adapt-voice", str(base_model), enrolment, "--out", str(adapted_path), "--factors", *factors])
        == 0
    )
    assert f"{adapted_path}: warp 0.94 (" in capsys.readouterr().out
    original, adapted = load_model(base_model), load_model(adapted_path)  # digest checked on load
    record = adapted.metadata[VOICE_WARP_KEY]
    assert record["factor"] == 0.94
    assert record["enrolment_utterances"] == len(read_manifest(enrolment))
    assert set(record["losses"]) == {f"{factor:g}" for factor in FACTORS}
    expected = warp_recognizer(original.recognizer, 0.94).features.mel_scale.fb
    assert torch.equal(adapted.recognizer.features.mel_scale.fb, expected)
    for name, weight in original.recognizer.encoder.state_dict().items():  # only the front end changed
        assert torch.equal(adapted.recognizer.encoder.state_dict()[name], weight)

    pytest.importorskip("onnxruntime", reason="onnxruntime is part of the dev extra")
    export_dir = tmp_path / "export"
    assert main(["export", str(adapted_path), "--out", str(export_dir)]) == 0
    np.testing.assert_array_equal(np.load(export_dir / "mel_filterbank.npy"), expected.numpy())

    out = tmp_path / "eval"
    assert main(["evaluate", str(adapted_path), str(tiny_corpus["test_speaker"]), "--out", str(out)]) == 0


def test_adapting_twice_and_bad_input_are_refused(base_model, tiny_corpus, tmp_path, capsys):
    adapted_path = tmp_path / "voice.pt"
    adapt_model_file(base_model, tiny_corpus["test_speaker"], adapted_path, FACTORS)
    with pytest.raises(SpeechpruneError, match="already adapted"):
        adapt_model_file(adapted_path, tiny_corpus["test_speaker"], tmp_path / "twice.pt")
    with pytest.raises(ValueError, match="outside"):
        warp_recognizer(load_model(base_model).recognizer, 3.0)

    missing = tmp_path / "missing.jsonl"
    assert main(["adapt-voice", str(base_model), str(missing), "--out", str(tmp_path / "x.pt")]) != 0
    assert str(missing) in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["adapt-voice", str(base_model), str(empty), "--out", str(tmp_path / "x.pt")]) != 0
    assert str(empty) in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["adapt-voice", str(base_model), str(empty), "--out", str(tmp_path / "x.pt"), "--factors", "3"])
    assert not (tmp_path / "x.pt").exists()  # nothing written for work not done
