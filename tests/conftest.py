"""Shared fixtures: a generated FSDD look-alike (so no test needs ../shared) and helpers for audio files."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile
import torch
from torch.utils.data import DataLoader

from asr.data.connected import CompositionConfig
from asr.data.dataset import Batch
from asr.data.fsdd import SplitRule, shared_fsdd_fallback
from asr.data.prepare_fsdd import FsddCorpusConfig, prepare_fsdd_corpus
from asr.lightning_module import CTCModule
from speechprune.cli import main

SAMPLE_RATE = 8000
# DTMF-like: each digit is a chord of two tones, which a tiny model can learn to tell apart
DIGIT_TONES = {d: (300 + 90 * d, 1500 + 170 * (9 - d)) for d in range(10)}
FAKE_SPEAKERS = ("alice", "bob", "carol")


def tone_digit(digit: int, speaker_index: int, take: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A short two-tone 'digit' whose pitch and length vary a little with speaker and take."""
    rng = np.random.default_rng(digit * 1000 + speaker_index * 100 + take)
    duration = 0.22 + 0.04 * rng.random()
    t = np.arange(int(duration * sample_rate)) / sample_rate
    shift = 1.0 + 0.03 * (speaker_index - 1)
    low, high = DIGIT_TONES[digit]
    signal = 0.3 * np.sin(2 * np.pi * low * shift * t) + 0.2 * np.sin(2 * np.pi * high * shift * t)
    envelope = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    return (signal * envelope + 0.003 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture(scope="session")
def fake_fsdd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An FSDD-layout folder: 3 speakers x 10 digits x 12 takes of tone 'digits' at 8 kHz."""
    root = tmp_path_factory.mktemp("fake_fsdd")
    recordings = root / "recordings"
    recordings.mkdir()
    for speaker_index, speaker in enumerate(FAKE_SPEAKERS):
        for digit in range(10):
            for take in range(12):
                soundfile.write(
                    recordings / f"{digit}_{speaker}_{take}.wav",
                    tone_digit(digit, speaker_index, take),
                    SAMPLE_RATE,
                    subtype="PCM_16",
                )
    return root


@pytest.fixture(scope="session")
def real_fsdd() -> Path:
    """The real FSDD on these machines; tests using it are skipped elsewhere."""
    path = shared_fsdd_fallback()
    if not (path / "recordings").is_dir():
        pytest.skip(f"real FSDD not available at {path} (only present on the project's machines)")
    return path


def write_bad_audio_files(folder: Path) -> dict[str, Path]:
    """A corrupt WAV (valid header start, garbage after), an empty file and a text file."""
    folder.mkdir(parents=True, exist_ok=True)
    corrupt = folder / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(40)))
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    text = folder / "notes.wav"
    text.write_text("this is not audio\n")
    return {"corrupt": corrupt, "empty": empty, "text": text}


@pytest.fixture(scope="session")
def tiny_corpus(fake_fsdd, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("tiny_corpus")
    config = FsddCorpusConfig(
        train_count=160,
        valid_count=16,
        test_count=12,
        test_speaker_count=12,
        tts_count=0,
        split_rule=SplitRule(heldout_speaker="carol"),
        composition=CompositionConfig(max_digits=3),
    )
    manifests = prepare_fsdd_corpus(fake_fsdd, out, config, progress=False)
    assert main(["train-tokenizer", str(manifests["train"]), "--out", str(out / "tokenizer.model")]) == 0
    manifests["tokenizer"] = out / "tokenizer.model"
    return manifests


TINY_FEATURES = {"n_mels": 40}
TINY_MODEL = {"conv_channels": [8, 8], "lstm_hidden": [48], "dropout": 0.0}


def tiny_module(tokenizer, **model) -> CTCModule:
    """An untrained CTCModule shaped like :func:`tiny_config`'s model; ``model`` overrides its fields."""
    shape = {**copy.deepcopy(TINY_MODEL), **model}
    shape.update(input_dim=TINY_FEATURES["n_mels"], vocab_size=tokenizer.vocab_size)
    return CTCModule(features=dict(TINY_FEATURES), model=shape, tokenizer=tokenizer)


def tiny_batches(tokenizer, count: int) -> list[Batch]:
    """``count`` two-utterance batches of seeded noise with digit transcripts, for real Lightning fits of
    :func:`tiny_module` without a corpus."""
    generator = torch.Generator().manual_seed(0)
    texts = ["one two", "three four"]
    ids = [tokenizer.encode(text) for text in texts]
    targets = torch.zeros(2, max(map(len, ids)), dtype=torch.long)
    for row, units in enumerate(ids):
        targets[row, : len(units)] = torch.tensor(units)
    lengths = torch.tensor([len(u) for u in ids])
    return [
        Batch(
            0.1 * torch.randn(2, 4000, generator=generator),
            torch.tensor([4000, 4000]),
            targets,
            lengths,
            [0, 1],
        )
        for _ in range(count)
    ]


def fit_tiny(module: CTCModule, batches: list[Batch], tmp_path: Path, ckpt_path=None, **trainer) -> L.Trainer:
    """A real Lightning fit of ``module`` on ``batches`` on the CPU, logging, checkpointing, validating and
    printing nothing; ``trainer`` adds Trainer options (max_epochs, callbacks)."""
    fitter = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        **trainer,
    )
    loader = DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch)
    fitter.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
    return fitter


def tiny_config(corpus: dict[str, Path], epochs: int) -> dict:
    return {
        "seed": 3,
        "data": {
            "train_manifests": [str(corpus["train"])],
            "valid_manifest": str(corpus["valid"]),
            "max_batch_seconds": 8.0,
            "num_workers": 0,
        },
        "tokenizer": {"path": str(corpus["tokenizer"])},
        "features": dict(TINY_FEATURES),
        "model": copy.deepcopy(TINY_MODEL),
        "augment": {"pitch_prob": 0.0, "noise_prob": 0.0, "freq_masks": 0, "time_masks": 0},
        "optim": {"lr": 0.01, "warmup_fraction": 0.05},
        "trainer": {
            "max_epochs": epochs,
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
        },
    }


@pytest.fixture(scope="session")
def base_model(tiny_corpus, tmp_path_factory) -> Path:
    """A tiny trained model (one BiLSTM layer of 48 units) to prune."""
    from asr.training import train

    return train(tiny_config(tiny_corpus, epochs=16), tmp_path_factory.mktemp("base"))


def prune_config(corpus: dict[str, Path], **prune_options) -> dict:
    """Iterative MNP to 50% in two events of 25%, snapshots at both, on the tiny corpus."""
    config = tiny_config(corpus, epochs=1)
    for section in ("tokenizer", "features", "model"):  # the model file describes itself
        del config[section]
    config["trainer"].pop("max_epochs")
    config["optim"] = {"lr": 0.005, "warmup_fraction": 0.1}
    config["prune"] = {
        "criterion": "mnp",
        "schedule": {
            "kind": "iterative",
            "target": 0.5,
            "step": 0.25,
            "epochs_between": 1,
            "final_epochs": 1,
        },
        "snapshots": [0.25, 0.5],
        **prune_options,
    }
    return config
