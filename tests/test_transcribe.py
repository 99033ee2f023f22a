"""`speechprune transcribe`: folders, globs, formats, any sample rate and channels, bad files reported."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from asr.data.manifest import read_manifest
from asr.transcribe import expand_inputs, word_timings
from speechprune.cli import main
from tests.conftest import write_bad_audio_files


@pytest.fixture
def audio_folder(tiny_corpus, tmp_path) -> Path:
    """Three test utterances of the tiny corpus, a 16 kHz stereo FLAC copy of the first, and bad files."""
    folder = tmp_path / "audio"
    folder.mkdir()
    for utterance in read_manifest(tiny_corpus["test"])[:3]:
        shutil.copy(utterance.audio_filepath, folder / Path(utterance.audio_filepath).name)
    samples, rate = soundfile.read(sorted(folder.glob("*.wav"))[0])
    upsampled = samples.repeat(2)  # 8 kHz -> 16 kHz by sample repetition
    (folder / "nested").mkdir()
    soundfile.write(folder / "nested" / "copy.flac", np.stack([upsampled, upsampled], axis=1), rate * 2)
    write_bad_audio_files(folder)
    return folder


def test_folder_with_bad_files_transcribes_the_rest_and_names_them(base_model, audio_folder, capsys):
    assert main(["transcribe", str(base_model), str(audio_folder)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 4  # three WAVs and the nested FLAC
    assert all("encoder" in line and "decoder" in line for line in lines)
    for name in ("corrupt.wav", "empty.wav", "notes.wav"):
        assert name in captured.err
    assert "3 of 7 files could not be read" in captured.err


def test_jsonl_carries_timings_scores_words_and_search_statistics(base_model, audio_folder, tmp_path):
    out = tmp_path / "out.jsonl"
    pattern = str(audio_folder / "*.wav")
    status = main(
        [
            "transcribe",
            str(base_model),
            pattern,
            "--decoder",
            "own",
            "--beam-width",
            "4",
            "--format",
            "jsonl",
            "--out",
            str(out),
        ]
    )
    assert status == 1  # the bad .wav files match the pattern too
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert {"path", "text", "score", "encoder_ms", "decoder_ms", "words", "search"} <= set(row)
        assert row["encoder_ms"] > 0 and row["decoder_ms"] > 0 and row["duration_s"] > 0
        assert row["search"]["extensions_per_frame"] > 0
        assert [w["word"] for w in row["words"]] == row["text"].split()
        assert all(0 <= w["start"] < w["end"] <= row["duration_s"] + 0.1 for w in row["words"])


def test_resampled_stereo_flac_reads_like_the_original(base_model, audio_folder, tmp_path):
    out = tmp_path / "out.csv"
    bad = {"corrupt.wav", "empty.wav", "notes.wav"}
    original = sorted(p for p in audio_folder.glob("*.wav") if p.name not in bad)[0]
    copy = audio_folder / "nested" / "copy.flac"
    assert (
        main(["transcribe", str(base_model), str(original), str(copy), "--format", "csv", "--out", str(out)])
        == 0
    )
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [Path(r["path"]).name for r in rows] == [original.name, "copy.flac"]
    assert rows[0]["text"] == rows[1]["text"]
    assert float(rows[1]["duration_s"]) == pytest.approx(float(rows[0]["duration_s"]), abs=0.01)


def test_inputs_that_match_nothing_are_named(base_model, tmp_path, capsys):
    missing = tmp_path / "missing.wav"
    assert main(["transcribe", str(base_model), str(missing), str(tmp_path / "*.flac")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "pattern matched no file" in err
    with pytest.raises(Exception, match="no such file or folder"):
        expand_inputs([str(missing)])


def test_word_timings_join_pieces_at_word_boundaries():
    pieces = ["<blk>", "<unk>", "▁one", "▁t", "wo"]
    words = word_timings(pieces, [2, 3, 4], [1, 5, 7], frame_s=0.04)
    assert words == [{"word": "one", "start": 0.04, "end": 0.08}, {"word": "two", "start": 0.2, "end": 0.32}]


def test_a_lexicon_built_from_the_manifests_restricts_the_decoded_words(
    base_model, tiny_corpus, tmp_path, capsys
):
    lexicon = tmp_path / "digits.lex"
    args = ["build-lexicon", str(tiny_corpus["train"]), "--model", str(base_model), "--out", str(lexicon)]
    assert main([*args, "--alias", "zero=oh"]) == 0
    lines = lexicon.read_text(encoding="utf-8").splitlines()
    words = {line.split("\t")[0] for line in lines}
    assert words <= set("zero one two three four five six seven eight nine".split()) and len(words) >= 8
    assert sum(line.startswith("zero\t") for line in lines) == 2  # "zero" and "oh"
    wavs = [u.audio_filepath for u in read_manifest(tiny_corpus["test"])[:6]]
    out = tmp_path / "lex.jsonl"
    options = ["--decoder", "flashlight", "--beam-width", "8", "--lexicon", str(lexicon), "--format", "jsonl"]
    assert main(["transcribe", str(base_model), *wavs, *options, "--out", str(out)]) == 0
    decoded = {w for line in out.read_text().splitlines() for w in json.loads(line)["text"].split()}
    assert decoded and decoded <= words
    capsys.readouterr()
    assert main(["transcribe", str(base_model), *wavs, "--lexicon", str(lexicon)]) == 2
    assert "--lexicon needs a beam-search --decoder" in capsys.readouterr().err
    assert main([*args, "--alias", "zero"]) == 2 and "WORD=SPOKEN" in capsys.readouterr().err
    assert main([*args, "--alias", "ten=tin"]) == 2 and "not in the lexicon" in capsys.readouterr().err
