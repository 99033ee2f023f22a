"""Fuzzing the batch commands: hundreds of damaged WAV/FLAC files and manifests through transcribe and
evaluate. Every run must end with a documented exit status and one-line messages (no traceback), and the
good files among the damaged ones must get exactly the transcripts they get alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.data.manifest import read_manifest
from speechprune.cli import main

MUTATIONS = ("truncate", "flip", "insert", "header", "zeros", "garbage", "empty", "rename")


def _mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    if kind == "truncate":
        return data[: int(rng.integers(0, len(data)))]
    if kind == "flip":
        buffer = bytearray(data)
        for position in rng.integers(0, len(buffer), size=int(rng.integers(1, 40))):
            buffer[position] = int(rng.integers(0, 256))
        return bytes(buffer)
    if kind == "insert":
        position = int(rng.integers(0, len(data)))
        return data[:position] + rng.bytes(int(rng.integers(1, 300))) + data[position:]
    if kind == "header":
        return rng.bytes(int(rng.integers(4, 64))) + data[64:]
    if kind == "zeros":
        return bytes(len(data))
    if kind == "garbage":
        return rng.bytes(int(rng.integers(1, 5000)))
    if kind == "empty":
        return b""
    return data  # "rename": good bytes under the other format's suffix


@pytest.fixture(scope="module")
def fuzzed(tiny_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    good = folder / "good"
    good.mkdir()
    sources = [Path(u.audio_filepath) for u in read_manifest(tiny_corpus["test"])[:3]]
    for source in sources:
        shutil.copy(source, good / source.name)
    samples, rate = sf.read(sources[0], dtype="float32")
    sf.write(good / "flac_one.flac", samples, rate, format="FLAC")
    bases = sorted(good.iterdir())
    damaged = folder / "damaged"
    damaged.mkdir()
    rng = np.random.default_rng(7)
    for index in range(240):
        base = bases[index % len(bases)]
        kind = MUTATIONS[index % len(MUTATIONS)]
        suffix = {".wav": ".flac", ".flac": ".wav"}[base.suffix] if kind == "rename" else base.suffix
        (damaged / f"{kind}_{index:03d}{suffix}").write_bytes(_mutate(base.read_bytes(), kind, rng))
    return folder


def _one_line_messages(err: str, command: str) -> None:
    assert "Traceback" not in err
    for line in err.replace("\r", "\n").strip().splitlines():
        if "%|" in line or not line.strip():  # a progress bar's redraws
            continue
        assert line.startswith((f"speechprune {command}", "  skipped ")) or ": truncated:" in line, line


def test_transcribe_survives_damaged_files_and_keeps_good_transcripts(base_model, fuzzed, tmp_path, capsys):
    alone = tmp_path / "alone.jsonl"
    assert (
        main(["transcribe", str(base_model), str(fuzzed / "good"), "--format", "jsonl", "--out", str(alone)])
        == 0
    )
    capsys.readouterr()
    mixed = tmp_path / "mixed.jsonl"
    status = main(
        ["transcribe", str(base_model), str(fuzzed / "good"), str(fuzzed / "damaged"), "--format", "jsonl",
         "--out", str(mixed), "--batch-size", "7"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1 and "could not be read" in err
    _one_line_messages(err, "transcribe")
    rows = {row["path"]: row["text"] for row in map(json.loads, mixed.read_text().splitlines())}
    expected = {row["path"]: row["text"] for row in map(json.loads, alone.read_text().splitlines())}
    assert {path: rows[path] for path in expected} == expected
    skipped = err.count("speechprune transcribe: skipped")
    assert skipped + len(rows) == 4 + 240 and skipped >= 60  # every file either transcribed or named


def test_evaluate_survives_damaged_manifests(base_model, fuzzed, tiny_corpus, tmp_path, capsys):
    lines = tiny_corpus["test"].read_bytes().splitlines(keepends=True)[:4]
    damaged_audio = sorted((fuzzed / "damaged").iterdir())[:20]
    lines += [
        (json.dumps({"audio_filepath": str(p), "duration": 1.0, "text": "one"}) + "\n").encode()
        for p in damaged_audio
    ]
    rng = np.random.default_rng(11)
    statuses = []
    for index in range(40):
        mutated = [
            _mutate(line, ("flip", "truncate", "insert")[index % 3], rng) if rng.random() < 0.3 else line
            for line in lines
        ]
        manifest = tmp_path / f"m{index:02d}.jsonl"
        manifest.write_bytes(b"".join(mutated))
        status = main(["evaluate", str(base_model), str(manifest), "--out", str(tmp_path / "ev")])
        err = capsys.readouterr().err
        _one_line_messages(err, "evaluate")
        statuses.append(status)
        if status in (0, 1):
            summary = json.loads((tmp_path / "ev" / f"m{index:02d}.summary.json").read_text())
            assert (summary["wer"] is None) == (summary["utterances"] == 0)
    assert set(statuses) <= {0, 1, 2} and statuses.count(1) >= 30  # 2: no usable line at all
