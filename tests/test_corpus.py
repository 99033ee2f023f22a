"""Connected-digit corpus: splits never leak, builds are deterministic and resumable, FSDD is located."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from asr.data.connected import CompositionConfig
from asr.data.fsdd import SplitRule, list_recordings, locate_fsdd
from asr.data.manifest import read_manifest
from asr.data.prepare_fsdd import FsddCorpusConfig, assign_splits, plan_corpus, prepare_fsdd_corpus
from common.errors import SpeechpruneError

SMALL = dict(train_count=60, valid_count=12, test_count=12, test_speaker_count=12, tts_count=0)


def small_config(**overrides) -> FsddCorpusConfig:
    return FsddCorpusConfig(**{**SMALL, "split_rule": SplitRule(heldout_speaker="carol"), **overrides})


def test_split_rule_follows_fsdd_convention(fake_fsdd):
    splits = assign_splits(list_recordings(fake_fsdd), SplitRule(heldout_speaker="carol"))
    assert {r.index for r in splits["test"]} == set(range(5))
    assert {r.index for r in splits["valid"]} == set(range(5, 10))
    assert {r.index for r in splits["train"]} == {10, 11}
    assert {r.speaker for r in splits["test_speaker"]} == {"carol"}
    assert "carol" not in {r.speaker for r in splits["train"] + splits["valid"] + splits["test"]}


def test_planned_utterances_never_reuse_another_splits_recordings(fake_fsdd):
    plans = plan_corpus(list_recordings(fake_fsdd), small_config())
    sources = {split: {s for p in split_plans for s in p.sources} for split, split_plans in plans.items()}
    for held_out in ("valid", "test", "test_speaker"):
        assert sources["train"].isdisjoint(sources[held_out]), held_out
    assert sources["valid"].isdisjoint(sources["test"])
    assert {p.speaker for p in plans["test_speaker"]} == {"carol"}
    for split_plans in plans.values():
        for plan in split_plans:
            assert 1 <= len(plan.digits) <= 7
            # each word comes from the utterance's own speaker, and its digit matches the file
            assert all(Path(s).name.split("_")[1] == plan.speaker for s in plan.sources)
            assert [int(Path(s).name[0]) for s in plan.sources] == list(plan.digits)


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_build_is_deterministic_and_resumes(fake_fsdd, tmp_path):
    config = small_config()
    manifests = prepare_fsdd_corpus(fake_fsdd, tmp_path / "a", config, progress=False)
    prepare_fsdd_corpus(fake_fsdd, tmp_path / "b", config, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")

    utterances = read_manifest(manifests["train"])
    assert len(utterances) == 60 and all(u.duration > 0.2 for u in utterances)
    probe = read_manifest(manifests["test_speaker_tight"])
    assert len(probe) == 12 and {u.speaker for u in probe} == {"carol"}
    victim = Path(utterances[3].audio_filepath)
    original = victim.read_bytes()
    victim.unlink()  # as if the build had been interrupted
    prepare_fsdd_corpus(fake_fsdd, tmp_path / "a", config, progress=False)
    assert victim.read_bytes() == original

    other_seed = prepare_fsdd_corpus(fake_fsdd, tmp_path / "c", small_config(seed=7), progress=False)
    assert [u.text for u in read_manifest(other_seed["train"])] != [u.text for u in utterances]


def test_resuming_with_other_settings_is_refused(fake_fsdd, tmp_path):
    prepare_fsdd_corpus(fake_fsdd, tmp_path, small_config(), progress=False)
    with pytest.raises(SpeechpruneError, match="other settings"):
        prepare_fsdd_corpus(
            fake_fsdd, tmp_path, small_config(composition=CompositionConfig(max_digits=3)), progress=False
        )


def test_synthetic_speech_goes_to_its_own_training_manifest(fake_fsdd, tmp_path):
    pytest.importorskip("espeakng_loader", reason="eSpeak NG (espeakng-loader) is not installed")
    manifests = prepare_fsdd_corpus(fake_fsdd, tmp_path, small_config(tts_count=4), progress=False)
    synthetic = read_manifest(manifests["train_tts"])
    assert len(synthetic) == 4 and all(u.speaker.startswith("tts:") for u in synthetic)
    for split in ("valid", "test", "test_speaker"):  # test splits stay real recordings only
        assert not any((u.speaker or "").startswith("tts:") for u in read_manifest(manifests[split]))


def test_synthetic_strings_rebuilt_after_an_interruption_match_an_uninterrupted_build(fake_fsdd, tmp_path):
    """A build resumed midway once rendered the rest of its eSpeak NG strings differently (the engine
    carried state from one string into the next), so two machines trained on different audio."""
    pytest.importorskip("espeakng_loader", reason="eSpeak NG (espeakng-loader) is not installed")
    config = small_config(tts_count=6)
    manifests = prepare_fsdd_corpus(fake_fsdd, tmp_path / "a", config, progress=False)
    synthetic = read_manifest(manifests["train_tts"])
    uninterrupted = {u.audio_filepath: Path(u.audio_filepath).read_bytes() for u in synthetic}
    for utterance in synthetic[3:]:  # as if the build had stopped after its third string
        Path(utterance.audio_filepath).unlink()
    prepare_fsdd_corpus(fake_fsdd, tmp_path / "a", config, progress=False)
    assert {u.audio_filepath: Path(u.audio_filepath).read_bytes() for u in synthetic} == uninterrupted


def test_locate_fsdd_prefers_the_named_folder_and_explains_absence(fake_fsdd, tmp_path, monkeypatch):
    assert locate_fsdd(fake_fsdd) == fake_fsdd
    assert locate_fsdd(fake_fsdd / "recordings") == fake_fsdd
    monkeypatch.setattr("asr.data.fsdd.shared_fsdd_fallback", lambda: tmp_path / "nothing")
    with pytest.raises(SpeechpruneError, match="FSDD not found"):
        locate_fsdd(tmp_path / "missing")


def test_real_fsdd_has_six_speakers_and_a_held_out_one(real_fsdd):
    recordings = list_recordings(locate_fsdd(None))
    assert len(recordings) == 3000
    splits = assign_splits(recordings, SplitRule())
    assert len({r.speaker for r in splits["train"]}) == 5
    assert len(splits["test_speaker"]) == 500 and len(splits["test"]) == 250 and len(splits["valid"]) == 250


def test_tight_joins_touch_training_strings_only_and_leave_plain_ones_as_they_were(fake_fsdd):
    recordings = list_recordings(fake_fsdd)
    plain = plan_corpus(recordings, small_config())
    tight = plan_corpus(recordings, small_config(composition=CompositionConfig(tight_fraction=0.5)))
    for split in ("valid", "test", "test_speaker"):
        assert tight[split] == plain[split], split
    tightened = [t for t in tight["train"] if t.trim_db is not None]
    assert 10 < len(tightened) < 50  # about half of 60
    for before, after in zip(plain["train"], tight["train"], strict=True):
        if after.trim_db is None:
            assert after == before  # the tight draws come from their own generator
        else:
            assert after.sources == before.sources and after.gaps[0] == before.gaps[0]
    assert any(gap < 0 for plan in tightened for gap in plan.gaps[1:-1])


def test_the_fluent_probe_joins_every_held_out_string_tightly_whatever_the_training_levers(fake_fsdd):
    recordings = list_recordings(fake_fsdd)
    plain = plan_corpus(recordings, small_config())
    levers = plan_corpus(
        recordings, small_config(composition=CompositionConfig(tight_fraction=0.5, join_tempo_max=1.3))
    )
    probe = plain["test_speaker_tight"]
    assert probe == levers["test_speaker_tight"] and len(probe) == 12
    held_out = {r.path for r in assign_splits(recordings, SplitRule(heldout_speaker="carol"))["test_speaker"]}
    assert {s for p in probe for s in p.sources} <= held_out  # the held-out speaker's recordings only
    assert all(p.trim_db is not None and p.tempos is None for p in probe)
    assert any(gap < 0 for p in probe for gap in p.gaps[1:-1])


def test_join_tempo_speeds_up_inner_words_of_tight_strings_only(fake_fsdd):
    recordings = list_recordings(fake_fsdd)
    tight = plan_corpus(recordings, small_config(composition=CompositionConfig(tight_fraction=0.5)))
    faster = plan_corpus(
        recordings, small_config(composition=CompositionConfig(tight_fraction=0.5, join_tempo_max=1.3))
    )
    for split in ("valid", "test", "test_speaker"):
        assert faster[split] == tight[split], split
    tempos = []
    for before, after in zip(tight["train"], faster["train"], strict=True):
        # the same strings and joins; only the tempos are new, drawn for tight strings alone
        assert (after.sources, after.gaps, after.trim_db) == (before.sources, before.gaps, before.trim_db)
        if after.trim_db is None:
            assert after.tempos is None
        else:
            assert len(after.tempos) == len(after.digits) and after.tempos[-1] == 1.0
            tempos.extend(after.tempos[:-1])
    assert tempos and all(1.0 <= t <= 1.3 for t in tempos) and max(tempos) > 1.15
    with pytest.raises(ValueError, match="join_tempo_max"):
        CompositionConfig(join_tempo_max=0.8)


@pytest.mark.parametrize(("value", "why"), [("0.8", "in [1, 2]"), ("2.5", "in [1, 2]"), ("nan", "finite")])
def test_prepare_fsdd_refuses_a_join_tempo_outside_1_to_2_before_any_work(
    fake_fsdd, tmp_path, capsys, value, why
):
    from speechprune.cli import main

    out = tmp_path / "corpus"
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare-fsdd", "--fsdd-dir", str(fake_fsdd), "--out", str(out), "--join-tempo", value])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and "--join-tempo" in err[-1] and why in err[-1]
    assert not out.exists()


def test_speed_up_shortens_a_word_and_keeps_its_pitch():
    from asr.data.connected import render, speed_up

    rate = 8000
    word = (np.sin(2 * np.pi * 400 * np.arange(rate // 2) / rate) * 0.5).astype(np.float32)
    faster = speed_up(word, 1.25)
    assert abs(len(faster) - len(word) / 1.25) <= 1
    spectrum = np.abs(np.fft.rfft(faster[400:2900]))
    assert abs(np.argmax(spectrum) * rate / 2500 - 400) < 10  # a resampler would have moved it to 500 Hz
    assert len(speed_up(word[:200], 1.25)) == 200  # shorter than the vocoder's window: left alone
    config = CompositionConfig(noise_floor_dbfs=-120.0)
    args = ([word, word], (0.1, 0.0, 0.1), (0.0, 0.0), 0.0, 0, rate, config, 30.0)
    assert len(render(*args)) - len(render(*args, (1.25, 1.0))) == pytest.approx(len(word) * 0.2, abs=90)


def test_tight_join_trims_words_and_cross_fades_overlaps():
    from asr.data.connected import render, trim_to_speech

    rate = 8000
    tone = np.sin(2 * np.pi * 300 * np.arange(rate // 2) / rate).astype(np.float32) * 0.5
    word = np.concatenate([np.zeros(rate // 5, np.float32), tone, np.zeros(rate // 5, np.float32)])
    trimmed = trim_to_speech(word, rate, trim_db=30.0)
    assert abs(len(trimmed) - len(tone)) <= rate // 100  # the silences went, within one 10 ms frame
    config = CompositionConfig(noise_floor_dbfs=-120.0)
    plain = render([word, word], (0.1, 0.1, 0.1), (0.0, 0.0), 0.0, 0, rate, config)
    overlapped = render([word, word], (0.1, -0.05, 0.1), (0.0, 0.0), 0.0, 0, rate, config, trim_db=30.0)
    assert len(plain) == 2 * len(word) + round(0.3 * rate)
    assert abs(len(overlapped) - (2 * len(trimmed) - round(0.05 * rate) + round(0.2 * rate))) <= 2
    # the cross-fade keeps the level inside the overlap (no gap, no doubling)
    middle = overlapped[
        round(0.1 * rate) + len(trimmed) - round(0.05 * rate) : round(0.1 * rate) + len(trimmed)
    ]
    assert 0.3 < np.abs(middle).max() < 0.75


def test_an_excluded_speaker_is_in_no_split_and_the_training_strings_keep_their_number(fake_fsdd, tmp_path):
    config = small_config(split_rule=SplitRule(heldout_speaker="carol", excluded_speakers=("alice",)))
    manifests = prepare_fsdd_corpus(fake_fsdd, tmp_path / "without_alice", config, progress=False)
    for split in ("train", "valid", "test", "test_speaker", "test_speaker_tight"):
        speakers = {u.speaker for u in read_manifest(manifests[split])}
        assert "alice" not in speakers and speakers, split
    assert {u.speaker for u in read_manifest(manifests["train"])} == {"bob"}
    assert len(read_manifest(manifests["train"])) == SMALL["train_count"]
    settings = json.loads((tmp_path / "without_alice" / "corpus.json").read_text())
    assert settings["split_rule"]["excluded_speakers"] == ["alice"]


def test_a_corpus_built_before_speakers_could_be_excluded_still_resumes(fake_fsdd, tmp_path):
    prepare_fsdd_corpus(fake_fsdd, tmp_path, small_config(), progress=False)
    settings = json.loads((tmp_path / "corpus.json").read_text())
    del settings["split_rule"]["excluded_speakers"]
    (tmp_path / "corpus.json").write_text(json.dumps(settings))
    prepare_fsdd_corpus(fake_fsdd, tmp_path, small_config(), progress=False)
    excluding = small_config(split_rule=SplitRule(heldout_speaker="carol", excluded_speakers=("alice",)))
    with pytest.raises(SpeechpruneError, match="other settings"):
        prepare_fsdd_corpus(fake_fsdd, tmp_path, excluding, progress=False)


@pytest.mark.parametrize(
    ("excluded", "why"),
    [
        ("dave", "excluded speaker 'dave' has no recordings"),
        ("carol", "also excluded"),
        ("alice bob", "no speaker is left to train and test on"),
    ],
)
def test_prepare_fsdd_refuses_an_unknown_or_held_out_excluded_speaker_before_any_work(
    fake_fsdd, tmp_path, capsys, excluded, why
):
    from speechprune.cli import main

    out = tmp_path / "corpus"
    argv = ["prepare-fsdd", "--fsdd-dir", str(fake_fsdd), "--out", str(out), "--heldout-speaker", "carol"]
    assert main([*argv, "--exclude-speakers", *excluded.split()]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and why in err[0]
    assert not out.exists()


def test_a_corpus_of_every_speaker_trains_on_all_of_them_and_has_no_held_out_split(fake_fsdd, tmp_path):
    config = small_config(split_rule=SplitRule(heldout_speaker=None))
    manifests = prepare_fsdd_corpus(fake_fsdd, tmp_path, config, progress=False)
    assert set(manifests) == {"train", "valid", "test"}
    assert not (tmp_path / "test_speaker.jsonl").exists() and not (tmp_path / "wav" / "test_speaker").exists()
    for split in ("train", "valid", "test"):
        assert {u.speaker for u in read_manifest(manifests[split])} == {"alice", "bob", "carol"}, split
    assert len(read_manifest(manifests["train"])) == SMALL["train_count"]


def test_prepare_fsdd_takes_a_held_out_speaker_or_all_speakers_not_both(fake_fsdd, tmp_path, capsys):
    from speechprune.cli import main

    out = tmp_path / "corpus"
    argv = ["prepare-fsdd", "--fsdd-dir", str(fake_fsdd), "--out", str(out), "--tts-count", "0"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--heldout-speaker", "carol", "--all-speakers"])
    assert exit_info.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert not out.exists()
    small = ["--train-count", "30", "--valid-count", "6", "--test-count", "6"]
    assert main([*argv, *small, "--all-speakers"]) == 0
    assert "test_speaker" not in capsys.readouterr().out
    assert {u.speaker for u in read_manifest(out / "train.jsonl")} == {"alice", "bob", "carol"}
