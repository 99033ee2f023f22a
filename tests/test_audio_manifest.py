"""Audio reading (resampling, mixdown, bad files) and manifests (round trip, errors naming file and line)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from asr.audio import audio_duration, load_audio, write_wav
from asr.data.manifest import Utterance, read_manifest, write_manifest
from common.errors import AudioError, ManifestError
from tests.conftest import write_bad_audio_files


@pytest.mark.parametrize("file_rate", [8000, 16000, 44100])
def test_load_audio_resamples_to_model_rate(tmp_path, file_rate):
    seconds = 0.5
    t = np.arange(int(file_rate * seconds)) / file_rate
    soundfile.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t), file_rate)
    waveform = load_audio(tmp_path / "tone.wav", 8000)
    assert waveform.dtype.is_floating_point and waveform.ndim == 1
    assert abs(waveform.shape[0] - 4000) <= 1
    spectrum = np.abs(np.fft.rfft(waveform.numpy()))
    assert abs(np.argmax(spectrum) * 8000 / waveform.shape[0] - 440) < 5  # the tone survives resampling


def test_load_audio_mixes_stereo_down(tmp_path):
    left = np.full(800, 0.5, dtype=np.float32)
    soundfile.write(tmp_path / "stereo.flac", np.stack([left, -left * 0.0 + 0.1], axis=1), 8000)
    waveform = load_audio(tmp_path / "stereo.flac", 8000)
    assert waveform.shape == (800,)
    assert float(waveform.mean()) == pytest.approx(0.3, abs=1e-3)


@pytest.mark.parametrize("kind", ["corrupt", "empty", "text"])
def test_bad_audio_raises_error_naming_the_file(tmp_path, kind):
    path = write_bad_audio_files(tmp_path)[kind]
    with pytest.raises(AudioError, match=path.name):
        load_audio(path, 8000)
    with pytest.raises(AudioError, match=path.name):
        audio_duration(path)


def test_missing_audio_names_the_file(tmp_path):
    with pytest.raises(AudioError, match="nowhere.wav"):
        load_audio(tmp_path / "nowhere.wav", 8000)


def test_manifest_round_trip_keeps_relative_paths(tmp_path):
    write_wav(tmp_path / "wav" / "a.wav", np.zeros(800, dtype=np.float32), 8000)
    utterances = [
        Utterance(str(tmp_path / "wav" / "a.wav"), 0.1, "one two", "jackson"),
        Utterance(str(tmp_path / "wav" / "a.wav"), 0.1, "three"),
    ]
    write_manifest(tmp_path / "m.jsonl", utterances)
    first = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert first["audio_filepath"] == "wav/a.wav"
    assert "speaker" not in json.loads((tmp_path / "m.jsonl").read_text().splitlines()[1])
    moved = tmp_path.rename(tmp_path.with_name(tmp_path.name + "_moved"))
    assert [u.text for u in read_manifest(moved / "m.jsonl")] == ["one two", "three"]
    assert read_manifest(moved / "m.jsonl")[0].audio_filepath == str(moved / "wav" / "a.wav")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"audio_filepath": "a.wav", "text": "x"}', "missing field"),
        ('{"audio_filepath": "a.wav", "duration": "long", "text": "x"}', "not a number"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path, line, message):
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"audio_filepath": "a.wav", "duration": 1.0, "text": "one"}\n' + line + "\n")
    with pytest.raises(ManifestError, match=rf"bad.jsonl:2: .*{message}"):
        read_manifest(manifest)
