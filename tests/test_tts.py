"""eSpeak NG synthesis: audible, well-formed digit speech whose rate and voice follow the settings."""

import random
import re

import numpy as np
import pytest

pytest.importorskip(
    "espeakng_loader", reason="espeakng-loader (libespeak-ng and its voice data) is not installed"
)

from asr.data.tts import (  # noqa: E402
    EspeakSynthesizer,
    VoiceSettings,
    english_voice_variants,
    random_voice_settings,
)
from common.errors import SpeechpruneError  # noqa: E402

TEXT = "three one four"


@pytest.fixture(scope="module")
def synthesizer() -> EspeakSynthesizer:
    return EspeakSynthesizer()


def test_synthesized_digits_are_well_formed_audio(synthesizer: EspeakSynthesizer) -> None:
    audio = synthesizer.synthesize(TEXT, VoiceSettings("en-us", 170, 50, 50))
    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 0
    assert np.all(np.isfinite(audio))
    assert np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio**2)) > 0.01
    assert 0.3 <= audio.size / synthesizer.sample_rate <= 5.0


def test_faster_rate_gives_shorter_speech(synthesizer: EspeakSynthesizer) -> None:
    slow = synthesizer.synthesize(TEXT, VoiceSettings("en-us", 120, 50, 50))
    fast = synthesizer.synthesize(TEXT, VoiceSettings("en-us", 300, 50, 50))
    assert fast.size < slow.size


def test_voice_variants_give_different_waveforms(synthesizer: EspeakSynthesizer) -> None:
    male = synthesizer.synthesize(TEXT, VoiceSettings("en-us+m3", 170, 50, 50))
    female = synthesizer.synthesize(TEXT, VoiceSettings("en-us+f2", 170, 50, 50))
    assert male.size != female.size or not np.allclose(male, female)


def test_unknown_voice_is_a_user_error(synthesizer: EspeakSynthesizer) -> None:
    with pytest.raises(SpeechpruneError, match="no voice"):
        synthesizer.synthesize(TEXT, VoiceSettings("xx-no-such-voice", 170, 50, 50))


def test_english_voice_variants_include_female_voices() -> None:
    voices = english_voice_variants()
    assert len(voices) >= 5
    assert any(re.search(r"\+f\d$", voice) for voice in voices)


def test_random_voice_settings_stay_in_range() -> None:
    rng = random.Random(0)
    voices = set(english_voice_variants())
    for _ in range(20):
        settings = random_voice_settings(rng)
        assert settings.voice in voices
        assert 110 <= settings.rate_wpm <= 260
        assert 20 <= settings.pitch <= 80
        assert 20 <= settings.pitch_range <= 90


def test_out_of_range_settings_are_refused() -> None:
    with pytest.raises(SpeechpruneError, match="rate_wpm"):
        VoiceSettings("en-us", 50, 50, 50)


def test_mbrola_without_its_programs_is_refused_in_one_line(monkeypatch) -> None:
    import asr.data.tts as tts

    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    assert tts.installed_mbrola_voices() == ()
    with pytest.raises(SpeechpruneError, match="apt-get install espeak-ng mbrola"):
        tts.MbrolaSynthesizer()


def test_mbrola_voices_speak_digits_when_installed(tmp_path) -> None:
    from asr.data.manifest import read_manifest
    from asr.data.prepare_fsdd import FsddCorpusConfig, prepare_mbrola_split
    from asr.data.tts import MbrolaSynthesizer, installed_mbrola_voices

    if not installed_mbrola_voices():
        pytest.skip("no MBROLA voice installed (optional: apt-get install espeak-ng mbrola mbrola-us1)")
    synthesizer = MbrolaSynthesizer()
    voice = f"mb-{synthesizer.voices[0]}"
    slow = synthesizer.synthesize(TEXT, VoiceSettings(voice, 120, 50, 50))
    fast = synthesizer.synthesize(TEXT, VoiceSettings(voice, 300, 50, 50))
    assert slow.dtype == np.float32 and np.sqrt(np.mean(slow**2)) > 0.01 and len(fast) < 0.75 * len(slow)
    with pytest.raises(SpeechpruneError, match="pitch_range"):
        synthesizer.synthesize(TEXT, VoiceSettings(voice, 170, 50, 80))
    manifest = prepare_mbrola_split(tmp_path, 4, FsddCorpusConfig(), progress=False)
    utterances = read_manifest(manifest)
    assert len(utterances) == 4 and all(u.speaker.startswith("tts:mb-") for u in utterances)
    assert prepare_mbrola_split(tmp_path, 4, FsddCorpusConfig(), progress=False) == manifest  # resumes
    with pytest.raises(SpeechpruneError, match="other settings"):
        prepare_mbrola_split(tmp_path, 5, FsddCorpusConfig(), progress=False)
