"""Audio fingerprints: the same audio and transcripts hash alike wherever they lie; any change does not."""

from __future__ import annotations

import shutil

import numpy as np
import soundfile as sf

from asr.data.fingerprint import AudioFingerprint, audio_fingerprint
from asr.data.manifest import Utterance


def _utterances(folder, texts=("one two", "three")) -> list[Utterance]:
    folder.mkdir()
    utterances = []
    for index, text in enumerate(texts):
        path = folder / f"u{index}.wav"
        tone = np.sin(np.arange(800) * (0.1 + index / 10)).astype(np.float32) * 0.3
        sf.write(path, tone, 8000)
        utterances.append(Utterance(str(path), 0.1, text))
    return utterances


def test_the_same_audio_in_another_folder_has_the_same_fingerprint(tmp_path):
    here = _utterances(tmp_path / "here")
    shutil.copytree(tmp_path / "here", tmp_path / "there")
    there = [Utterance(u.audio_filepath.replace("/here/", "/there/"), u.duration, u.text) for u in here]
    assert audio_fingerprint(here) == audio_fingerprint(there)
    assert len(audio_fingerprint(here)) == 16
    incremental = AudioFingerprint()
    for utterance in here:
        incremental.add(utterance)
    assert incremental.hexdigest() == audio_fingerprint(here)


def test_a_changed_sample_transcript_or_order_changes_the_fingerprint(tmp_path):
    utterances = _utterances(tmp_path / "set")
    original = audio_fingerprint(utterances)
    assert audio_fingerprint(utterances[::-1]) != original
    assert audio_fingerprint([utterances[0]]) != original
    retexted = [Utterance(utterances[0].audio_filepath, 0.1, "one too"), utterances[1]]
    assert audio_fingerprint(retexted) != original
    samples, rate = sf.read(utterances[1].audio_filepath, dtype="float32")
    samples[400] += 0.01
    sf.write(utterances[1].audio_filepath, samples, rate)
    assert audio_fingerprint(utterances) != original
