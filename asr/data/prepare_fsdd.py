"""Build the connected-digit corpus from FSDD: real splits that do not leak, plus synthetic training speech.

Output (under ``out_dir``): ``wav/<split>/*.wav`` at the corpus rate and one manifest per split:
``train.jsonl`` (real), ``train_tts.jsonl`` (eSpeak NG voices), ``valid.jsonl``, ``test.jsonl`` (real
recordings of training speakers never used in training), ``test_speaker.jsonl`` (a speaker never heard
in training) and ``test_speaker_tight.jsonl`` (that speaker's recordings joined tightly, every string: the
fluent-speech probe); the last two only when a speaker is held out. ``corpus.json`` records the settings; a
rerun with the same settings resumes.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soxr
from tqdm import tqdm

from asr.audio import audio_duration, read_audio, write_wav
from asr.data.connected import CompositionConfig, UtterancePlan, plan_split, render, render_plan, stable_seed
from asr.data.fsdd import DIGIT_WORDS, Recording, SplitRule, list_recordings
from asr.data.manifest import Utterance, write_manifest
from common.errors import SpeechpruneError
from common.fileio import write_json

if TYPE_CHECKING:
    from asr.data.tts import (
        EspeakSynthesizer,
        FliteSettings,
        FliteSynthesizer,
        MbrolaSynthesizer,
        VoiceSettings,
    )

    Synthesizer = EspeakSynthesizer | MbrolaSynthesizer | FliteSynthesizer

REAL_SPLITS = ("train", "valid", "test", "test_speaker")


@dataclass(frozen=True)
class FsddCorpusConfig:
    """Sizes and seeds of the corpus; part of ``corpus.json`` so that a resumed build is the same build."""

    sample_rate: int = 8000
    seed: int = 20240
    train_count: int = 4000
    valid_count: int = 300
    test_count: int = 600
    test_speaker_count: int = 600
    tts_count: int = 2000
    split_rule: SplitRule = field(default_factory=SplitRule)
    composition: CompositionConfig = field(default_factory=CompositionConfig)

    def count(self, split: str) -> int:
        return getattr(self, f"{split}_count")


def assign_splits(recordings: list[Recording], rule: SplitRule) -> dict[str, list[Recording]]:
    """Group recordings by the split that owns them; no recording belongs to two splits, and those of
    excluded speakers belong to none."""
    splits: dict[str, list[Recording]] = {name: [] for name in REAL_SPLITS}
    for recording in recordings:
        split = rule.split_of(recording)
        if split in splits:
            splits[split].append(recording)
    return splits


def plan_corpus(recordings: list[Recording], config: FsddCorpusConfig) -> dict[str, list[UtterancePlan]]:
    """Plans of every real split, drawn only from that split's recordings."""
    rule = config.split_rule
    if rule.heldout_speaker in rule.excluded_speakers:
        raise SpeechpruneError(f"held-out speaker {rule.heldout_speaker!r} is also excluded from the corpus")
    speakers = {recording.speaker for recording in recordings}
    for speaker in rule.excluded_speakers:
        if speaker not in speakers:
            raise SpeechpruneError(
                f"excluded speaker {speaker!r} has no recordings (have: {sorted(speakers)})"
            )
    splits = assign_splits(recordings, rule)
    if rule.heldout_speaker is not None and not splits["test_speaker"]:
        raise SpeechpruneError(
            f"held-out speaker {rule.heldout_speaker!r} has no recordings (have: {sorted(speakers)})"
        )
    for split in ("train", "valid", "test"):
        if not splits[split]:
            raise SpeechpruneError(
                f"no speaker is left to train and test on: {split} has no recordings (speakers "
                f"{sorted(speakers)}, held out {rule.heldout_speaker!r}, excluded "
                f"{list(rule.excluded_speakers)})"
            )
    plans = {
        name: plan_split(
            splits[name],
            name,
            config.count(name),
            config.seed,
            config.composition,
            tight_joins=name == "train",
        )
        for name in REAL_SPLITS
        if name != "test_speaker" or rule.heldout_speaker is not None
    }
    if rule.heldout_speaker is None:
        return plans
    # Pause-joined strings hide what fluent speech does to a recognizer (real read digit strings lose words
    # inside them; these strings hardly ever do), so the held-out speaker is also scored on strings whose
    # every join is tight. The probe is the same whatever the training strings' levers (no speed-ups).
    probe_joins = replace(config.composition, tight_fraction=1.0, join_tempo_max=1.0)
    plans["test_speaker_tight"] = plan_split(
        splits["test_speaker"],
        "test_speaker_tight",
        config.test_speaker_count,
        config.seed,
        probe_joins,
        tight_joins=True,
    )
    return plans


def prepare_fsdd_corpus(
    fsdd_dir: str | os.PathLike, out_dir: str | os.PathLike, config: FsddCorpusConfig, progress: bool = True
) -> dict[str, Path]:
    """Build (or resume) the corpus and return the manifest path of every split."""
    out_dir = Path(out_dir)
    # planned first: settings that name no recordings are refused before corpus.json pins them on the folder
    plans = plan_corpus(list_recordings(fsdd_dir), config)
    _check_same_settings(out_dir / "corpus.json", config)
    load_word = lru_cache(maxsize=None)(lambda path: read_audio(path, config.sample_rate))
    manifests = {}
    for split, split_plans in plans.items():
        utterances = []
        for plan in tqdm(split_plans, desc=f"corpus {split}", disable=not progress, unit="utt"):
            path = out_dir / "wav" / split / f"{plan.utterance_id}.wav"
            if not path.is_file():
                write_wav(
                    path,
                    render_plan(plan, load_word, config.sample_rate, config.composition),
                    config.sample_rate,
                )
            utterances.append(_utterance(path, plan.text, plan.speaker))
        manifests[split] = out_dir / f"{split}.jsonl"
        write_manifest(manifests[split], utterances)
    if config.tts_count > 0:
        manifests["train_tts"] = out_dir / "train_tts.jsonl"
        write_manifest(manifests["train_tts"], _synthesize_tts_split(out_dir, config, progress))
    return manifests


def _utterance(path: Path, text: str, speaker: str) -> Utterance:
    return Utterance(str(path), round(audio_duration(path), 4), text, speaker)


def _synthesize_tts_split(out_dir: Path, config: FsddCorpusConfig, progress: bool) -> list[Utterance]:
    """Connected digits spoken by many eSpeak NG voices at many rates and pitches (training only)."""
    from asr.data.tts import EspeakSynthesizer, random_voice_settings

    return synthesize_split(
        out_dir, "train_tts", config.tts_count, config, EspeakSynthesizer(), random_voice_settings, progress
    )


def synthesize_split(
    out_dir: Path,
    name: str,
    count: int,
    config: FsddCorpusConfig,
    synthesizer: Synthesizer,
    draw_settings: Callable[[random.Random], VoiceSettings | FliteSettings],
    progress: bool,
) -> list[Utterance]:
    """``count`` random digit strings, each spoken by a voice from ``draw_settings``, as WAVs under ``name``.

    Drawn from the corpus seed and the split's name, so a rerun renders only the missing files.
    """
    rng = random.Random(stable_seed(config.seed, "tts" if name == "train_tts" else name))
    composition = config.composition
    utterances = []
    for number in tqdm(range(count), desc=f"corpus {name}", disable=not progress, unit="utt"):
        length = rng.randint(composition.min_digits, composition.max_digits)
        digits = [rng.randrange(10) for _ in range(length)]
        settings = draw_settings(rng)
        edges = (rng.uniform(*composition.edge_seconds), rng.uniform(*composition.edge_seconds))
        gain_db = rng.uniform(-composition.utterance_level_jitter_db, 0.0)
        noise_seed = rng.randrange(2**31)
        text = " ".join(DIGIT_WORDS[d] for d in digits)
        path = out_dir / "wav" / name / f"{name}_{number:05d}.wav"
        if not path.is_file():
            speech = synthesizer.synthesize(text, settings)
            speech = soxr.resample(speech, synthesizer.sample_rate, config.sample_rate, quality="HQ")
            signal = render(
                [np.asarray(speech)], edges, (0.0,), gain_db, noise_seed, config.sample_rate, composition
            )
            write_wav(path, signal, config.sample_rate)
        utterances.append(_utterance(path, text, f"tts:{settings.voice}"))
    return utterances


def prepare_voice_split(
    out_dir: str | os.PathLike, engine: str, count: int, config: FsddCorpusConfig, progress: bool = True
) -> Path:
    """``out_dir/train_ENGINE.jsonl``: digit strings spoken by an engine's voices, beside the corpus's own
    ``train_tts`` (``espeak``: more eSpeak NG strings, other draws; ``mbrola``: MBROLA diphone voices
    through eSpeak NG; ``flite``: Flite's voices; the last two when installed); resumable."""
    from asr.data import tts

    engines = {
        "espeak": (tts.EspeakSynthesizer, lambda rng, _voices: tts.random_voice_settings(rng)),
        "mbrola": (tts.MbrolaSynthesizer, tts.random_mbrola_settings),
        "flite": (tts.FliteSynthesizer, tts.random_flite_settings),
    }
    if engine not in engines:
        raise SpeechpruneError(f"no synthetic voice engine {engine!r} (have: {', '.join(engines)})")
    make_synthesizer, draw = engines[engine]
    synthesizer = make_synthesizer()  # refuses before any work when none of its voices is installed
    out_dir = Path(out_dir)
    _check_same_settings(
        out_dir / "synthetic.json", {"count": count, "voices": list(synthesizer.voices), **asdict(config)}
    )
    name = f"train_{engine}"
    utterances = synthesize_split(
        out_dir, name, count, config, synthesizer, lambda rng: draw(rng, synthesizer.voices), progress
    )
    manifest = out_dir / f"{name}.jsonl"
    write_manifest(manifest, utterances)
    return manifest


def _with_defaults(found: dict, defaults: dict) -> dict:
    merged = dict(found)
    for key, default in defaults.items():
        if key not in merged:
            merged[key] = default
        elif isinstance(default, dict) and isinstance(merged[key], dict):
            merged[key] = _with_defaults(merged[key], default)
    return merged


def _check_same_settings(settings_path: Path, config: FsddCorpusConfig | dict) -> None:
    """Refuse to resume into a folder built with other settings: it would mix two corpora."""
    wanted = json.loads(json.dumps(config if isinstance(config, dict) else asdict(config)))
    if settings_path.is_file():
        # a setting added after the corpus was built is missing from its file; its default is what was built
        found = _with_defaults(
            json.loads(settings_path.read_text()), json.loads(json.dumps(asdict(FsddCorpusConfig())))
        )
        if found != wanted:
            raise SpeechpruneError(
                f"{settings_path.parent} holds a corpus built with other settings; remove it or choose "
                "another output folder"
            )
    else:
        write_json(settings_path, wanted)
