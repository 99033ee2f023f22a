"""Shared fixtures: a generated FSDD look-alike (so no test needs ../shared) and helpers for audio files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from asr.data.fsdd import shared_fsdd_fallback

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
