"""Hostile-but-realistic use: nothing is lost silently, exit codes tell the truth, typos are named,
broken model files are refused with one line, signals stop jobs cleanly, output files are readable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from asr.audio import load_audio
from asr.checkpoint import load_model, save_model
from asr.data.manifest import read_manifest
from common.errors import SpeechpruneError, Terminated
from common.fileio import write_json
from common.signals import install_sigterm_handler
from speechprune.cli import main
from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "speechprune", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


# ----------------------------------------------------------------------------- silent loss
def test_evaluate_with_nothing_readable_reports_no_score_and_fails(base_model, tmp_path, capsys):
    manifest = tmp_path / "gone.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"audio_filepath": f"missing{i}.wav", "duration": 1.0, "text": "one"}) + "\n"
            for i in range(3)
        )
    )
    assert main(["evaluate", str(base_model), str(manifest), "--out", str(tmp_path / "ev")]) == 1
    err = capsys.readouterr().err
    assert "no utterance could be scored" in err and "missing0.wav" in err
    summary = json.loads((tmp_path / "ev" / "gone.summary.json").read_text())
    assert summary["utterances"] == 0 and summary["wer"] is None and summary["cer"] is None


def test_outputs_that_cannot_be_written_are_refused_before_any_work(
    base_model, tiny_corpus, tmp_path, capsys
):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe", str(base_model), str(tiny_corpus["test"].parent), "--out", str(folder)])
    assert exit_info.value.code == 2 and "is a folder" in capsys.readouterr().err
    existing = tmp_path / "a_file"
    existing.write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(base_model), str(tiny_corpus["test"]), "--out", str(existing)])
    assert exit_info.value.code == 2 and "not a folder" in capsys.readouterr().err
    assert existing.read_text() == "keep me"


# ----------------------------------------------------------------------------- config typos
@pytest.mark.parametrize(
    ("edit", "overrides", "named"),
    [
        (lambda c: c.update(trainr={"max_epochs": 1}), [], "trainr"),
        (lambda c: None, ["nosuch.key=1"], "nosuch"),
        (lambda c: c["optim"].update(lr="fast"), [], "optim.lr"),
        (lambda c: c["optim"].update(lr=-1.0), [], "lr"),
        (lambda c: None, ["optim.lr=[1,2"], "optim.lr=[1,2"),
        (lambda c: c["trainer"].update(max_epoch=3), [], "trainer"),
        (lambda c: c["data"].update(max_batch_secs=3), [], "max_batch_secs"),
    ],
)
def test_config_mistakes_are_one_line_errors_naming_them(
    tiny_corpus, tmp_path, capsys, edit, overrides, named
):
    config = tiny_config(tiny_corpus, epochs=1)
    edit(config)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["train", "--config", str(path), "--exp-dir", str(tmp_path / "exp")]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "exp" / "checkpoints").exists()  # refused before any training


# ----------------------------------------------------------------------------- model files
def _payload(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p["state_dict"]["encoder.head.bias"].fill_(float("nan")), "non-finite"),
        (lambda p: p.pop("state_dict"), "no weights"),
        (lambda p: p.update(tokenizer=b"not a sentencepiece model"), "description is invalid"),
        (lambda p: p["features"].update(sample_rate=0), "description is invalid"),
        (lambda p: p["encoder"].update(vocab_size=p["encoder"]["vocab_size"] - 1), "weights do not match"),
    ],
)
def test_broken_model_files_are_refused_with_one_line(base_model, tmp_path, damage, message):
    loaded = load_model(base_model)
    clean = tmp_path / "clean.pt"
    save_model(clean, loaded.recognizer, loaded.tokenizer)
    payload = _payload(clean)
    damage(payload)
    payload.pop("sha256", None)  # as a file from elsewhere, without a digest
    broken = tmp_path / "broken.pt"
    torch.save(payload, broken)
    with pytest.raises(SpeechpruneError, match=message) as error:
        load_model(broken)
    assert str(broken) in str(error.value) and "\n" not in str(error.value)


def test_a_head_that_does_not_match_the_tokenizer_is_refused(base_model, tmp_path):
    loaded = load_model(base_model)
    recognizer = loaded.recognizer
    head = recognizer.encoder.head
    vocab = loaded.tokenizer.vocab_size
    for outputs in (vocab - 2, vocab + 3):  # smaller (accepted before) and larger (IndexError before)
        recognizer.encoder.head = torch.nn.Linear(head.in_features, outputs)
        recognizer.encoder.config.vocab_size = outputs
        path = tmp_path / f"head{outputs}.pt"
        save_model(path, recognizer, loaded.tokenizer)
        with pytest.raises(
            SpeechpruneError, match=f"CTC head has {outputs} outputs but the tokenizer {vocab}"
        ):
            load_model(path)


def test_an_edited_model_file_fails_its_content_digest(base_model, tmp_path):
    loaded = load_model(base_model)
    path = tmp_path / "model.pt"
    save_model(path, loaded.recognizer, loaded.tokenizer)
    payload = _payload(path)
    assert len(payload["sha256"]) == 64
    payload["state_dict"]["encoder.head.bias"][0] += 0.5
    torch.save(payload, path)
    with pytest.raises(SpeechpruneError, match="content digest mismatch"):
        load_model(path)


# ----------------------------------------------------------------------------- files and signals
def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        write_json(tmp_path / "result.json", {"a": 1})
    finally:
        os.umask(previous)
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o644


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"the job ended (status {process.returncode}) before it could be signalled")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the job to get going")
        time.sleep(0.05)


def test_sigterm_during_training_saves_last_ckpt_exits_143_and_the_rerun_resumes(tiny_corpus, tmp_path):
    config = tiny_config(tiny_corpus, epochs=6)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    exp = tmp_path / "exp"
    command = _cli("train", "--config", str(path), "--exp-dir", str(exp))
    process = subprocess.Popen(
        command, env=_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    last = exp / "checkpoints" / "last.ckpt"
    _wait_for(last.is_file, process)  # one epoch done: SIGTERM now lands mid-training
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM" in err and "rerun the same command to resume" in err
    assert not (exp / "train_summary.json").exists()
    step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert step > 0
    resumed = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["resumed_from"] and summary["epochs_completed"] == 6


def test_sigterm_is_not_swallowed_by_code_that_catches_exception():
    """The signal lands wherever the main thread is. tqdm catches ``Exception`` while it starts its monitor
    thread: a clean-clone CI run's SIGTERM landed there, became a warning, and `transcribe` ran on to exit 0.
    """
    previous = signal.getsignal(signal.SIGTERM)
    install_sigterm_handler()
    try:
        with pytest.raises(Terminated):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises here, in the main thread
            except Exception:  # what tqdm does around its monitor thread
                pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_during_transcribe_leaves_no_partial_output(base_model, tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    # enough files to outlast the signal on a loaded machine: 400 once finished (in 0.8 s) before it came
    for i in range(1200):
        sf.write(audio / f"u{i:04d}.wav", 0.1 * rng.standard_normal(16000).astype(np.float32), 8000)
    out = tmp_path / "out.jsonl"
    out.write_text("the previous run's transcripts\n")
    command = _cli("transcribe", str(base_model), str(audio), "--format", "jsonl", "--out", str(out))
    process = subprocess.Popen(
        command, env=_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    # signalled as soon as the replacement is in progress (possibly before its first line): whenever the job
    # stops, the old output must stay whole and no temporary file may stay behind
    _wait_for(lambda: any(tmp_path.glob(".out.jsonl.*.tmp")), process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM" in err and "resume" not in err  # transcribe does not resume
    assert out.read_text() == "the previous run's transcripts\n"  # untouched, not half-replaced
    assert not list(tmp_path.glob(".out.jsonl.*.tmp"))


def test_a_corrupt_language_model_is_named_before_decoding(base_model, tiny_corpus, tmp_path, capsys):
    bad = tmp_path / "bad.arpa"
    bad.write_text("garbage\n")
    wav = read_manifest(tiny_corpus["test"])[0].audio_filepath
    status = main(
        ["transcribe", str(base_model), wav, "--decoder", "own", "--lm", str(bad), "--lm-unit", "piece"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "bad.arpa: not an ARPA or KenLM binary" in err[0]


def test_a_truncated_wav_is_decoded_with_a_warning(tmp_path, caplog):
    path = tmp_path / "cut.wav"
    sf.write(path, np.zeros(16000, np.float32), 8000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING", logger="speechprune"):
        waveform = load_audio(path, 8000)
    assert 7000 < waveform.shape[0] < 8100
    assert any("cut.wav: truncated" in r.getMessage() for r in caplog.records)
    caplog.clear()
    sf.write(tmp_path / "whole.wav", np.zeros(16000, np.float32), 8000, subtype="PCM_16")
    with caplog.at_level("WARNING", logger="speechprune"):
        load_audio(tmp_path / "whole.wav", 8000)
    assert not caplog.records


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--batch-size", "-3"], "--batch-size"),
        (["--batch-size", "0"], "--batch-size"),
        (["--threads", "0"], "--threads"),
        (["--decoder", "own", "--beam-width", "0"], "--beam-width"),
        (["--decoder", "own", "--cutoff-prob", "2"], "--cutoff-prob"),
        (["--decoder", "own", "--alpha", "nan"], "--alpha"),
        (["--chunk-seconds", "0"], "--chunk-seconds"),
    ],
)
def test_bad_option_values_stop_before_any_work(base_model, tiny_corpus, tmp_path, capsys, options, named):
    out = tmp_path / "out.jsonl"
    out.write_text("earlier results\n")
    wav = read_manifest(tiny_corpus["test"])[0].audio_filepath
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe", str(base_model), wav, "--format", "jsonl", "--out", str(out), *options])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and named in err[-1] and "Traceback" not in "".join(err)
    assert out.read_text() == "earlier results\n"  # the output file was not replaced by nothing


def test_interrupting_a_command_that_does_not_resume_does_not_promise_it(
    base_model, tiny_corpus, capsys, monkeypatch
):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("asr.transcribe.FileTranscriber.transcribe", interrupted)
    wav = read_manifest(tiny_corpus["test"])[0].audio_filepath
    assert main(["transcribe", str(base_model), wav]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "resume" not in err


def test_an_lm_with_greedy_decoding_is_refused_not_ignored(base_model, tiny_corpus, tmp_path, capsys):
    lm = tmp_path / "lm.arpa"
    lm.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0\t<unk>\n\n\\end\\\n")
    wav = read_manifest(tiny_corpus["test"])[0].audio_filepath
    assert main(["transcribe", str(base_model), wav, "--lm", str(lm)]) == 2
    assert "--lm needs a beam-search --decoder" in capsys.readouterr().err
