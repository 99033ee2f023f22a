"""Encoder shapes, per-layer widths in the config, and loading models from their file alone."""

from __future__ import annotations

import argparse
from dataclasses import asdict

import pytest
import torch

from asr.checkpoint import load_model, save_model
from asr.features import FeatureConfig
from asr.inference import encode_batched, encode_each
from asr.models.lstm_ctc import EncoderConfig, LSTMCTCEncoder, count_parameters
from asr.recognizer import SpeechRecognizer
from asr.tokenizer import train_tokenizer
from common.errors import SpeechpruneError


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["one two three four five six seven eight nine zero"] * 5)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_encoder_shapes_and_subsampled_lengths(bidirectional):
    config = EncoderConfig(
        input_dim=40, vocab_size=18, conv_channels=[8, 6], lstm_hidden=[12, 7], bidirectional=bidirectional
    )
    encoder = LSTMCTCEncoder(config).eval()
    log_probs, lengths = encoder(torch.randn(3, 101, 40), torch.tensor([101, 50, 9]))
    assert log_probs.shape == (3, 26, 18)
    assert lengths.tolist() == [26, 13, 3]  # ceil(n / 4) after two stride-2 convs
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, 26), atol=1e-5)


@pytest.mark.parametrize("frames", [64, 61, 62, 63])
def test_padding_does_not_change_outputs_of_an_utterance(frames):
    torch.manual_seed(0)
    encoder = LSTMCTCEncoder(
        EncoderConfig(input_dim=40, vocab_size=10, conv_channels=[4, 4], lstm_hidden=[8, 8])
    ).eval()
    # positive biases: the padding's activation is far from the zeros a lone utterance sees
    with torch.no_grad():
        for conv in encoder.conv_layers():
            conv.bias.uniform_(0.5, 1.0)
    features = torch.randn(1, frames, 40)
    alone, alone_lengths = encoder(features, torch.tensor([frames]))
    padded = torch.cat([features, torch.zeros(1, 100 - frames, 40)], 1)
    together, lengths = encoder(torch.cat([padded, torch.randn(1, 100, 40)]), torch.tensor([frames, 100]))
    # every output frame, the last included: the second conv's kernel reaches one frame past the end
    assert lengths[0] == alone_lengths[0] == alone.shape[1]
    assert torch.allclose(alone[0], together[0, : alone.shape[1]], atol=1e-5)


def test_batched_and_one_by_one_encoding_agree():
    torch.manual_seed(0)
    recognizer = SpeechRecognizer(
        FeatureConfig(sample_rate=8000, n_mels=40),
        EncoderConfig(input_dim=40, vocab_size=10, conv_channels=[8, 8], lstm_hidden=[16, 16]),
    ).eval()
    waveforms = [torch.randn(n) * 0.1 for n in (8000, 5123, 12007, 3001, 7777)]
    for alone, batched in zip(
        encode_each(recognizer, waveforms), encode_batched(recognizer, waveforms), strict=True
    ):
        assert alone.shape == batched.shape
        assert torch.allclose(alone, batched, atol=1e-4)


def test_uneven_widths_round_trip_through_the_model_file(tmp_path, tokenizer):
    features = FeatureConfig(n_mels=40)
    encoder = EncoderConfig(
        input_dim=40, vocab_size=tokenizer.vocab_size, conv_channels=[5, 3], lstm_hidden=[37, 11, 19]
    )  # as a pruned model would have
    recognizer = SpeechRecognizer(features, encoder).eval()
    save_model(tmp_path / "model.pt", recognizer, tokenizer, metadata={"note": "pruned"})
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.recognizer.encoder.config.lstm_hidden == [37, 11, 19]
    assert loaded.metadata == {"note": "pruned"}
    assert loaded.tokenizer.pieces == tokenizer.pieces
    assert count_parameters(loaded.recognizer) == count_parameters(recognizer)
    waveform = torch.randn(2, 4000)
    lengths = torch.tensor([4000, 3000])
    with torch.inference_mode():
        assert torch.equal(loaded.recognizer(waveform, lengths)[0], recognizer(waveform, lengths)[0])
    assert asdict(loaded.recognizer.features.config) == asdict(features)


def test_loading_refuses_foreign_and_unsafe_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(SpeechpruneError, match="junk.pt"):
        load_model(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(SpeechpruneError, match="not a speechprune model"):
        load_model(tmp_path / "other.pt")
    # an arbitrary pickled object must not be unpickled (weights_only loading)
    torch.save({"format": "speechprune-model", "payload": argparse.Namespace(x=1)}, tmp_path / "pickle.pt")
    with pytest.raises(SpeechpruneError, match="pickle.pt"):
        load_model(tmp_path / "pickle.pt")
    with pytest.raises(SpeechpruneError, match="no such model"):
        load_model(tmp_path / "absent.pt")


def test_config_rejects_impossible_shapes():
    with pytest.raises(ValueError, match="lstm_hidden"):
        EncoderConfig(lstm_hidden=[])
    with pytest.raises(ValueError, match="n_mels"):
        SpeechRecognizer(FeatureConfig(n_mels=40), EncoderConfig(input_dim=80))
