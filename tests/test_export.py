"""Export for a device: the numpy front end gives torch's features, the ONNX encoder (pruned, uneven
widths; float32 and int8) gives the torch model's emissions and transcripts, and a damaged export folder
is refused."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is part of the dev extra")

from asr.checkpoint import load_model, save_model  # noqa: E402
from asr.data.manifest import read_manifest  # noqa: E402
from asr.export import export_model  # noqa: E402
from asr.frontend_numpy import log_mel  # noqa: E402
from asr.inference import load_evaluation_audio  # noqa: E402
from asr.onnx_model import ExportedModel  # noqa: E402
from common.errors import SpeechpruneError  # noqa: E402
from pruning.criteria import PruningContext, make_criterion  # noqa: E402
from pruning.selection import keep_top_units  # noqa: E402
from pruning.structure import prune_encoder, unit_groups  # noqa: E402
from speechprune.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def pruned_model(base_model, tmp_path_factory):
    """The tiny model with 40% of its LSTM units and a conv layer's channels removed (uneven widths)."""
    loaded = load_model(base_model)
    encoder = loaded.recognizer.encoder
    scores = make_criterion("random", seed=0).scores(encoder, PruningContext())
    plan = keep_top_units(encoder, scores, unit_groups(encoder), 0.4, ["lstm.0", "conv.1"])
    loaded.recognizer.encoder = prune_encoder(encoder, plan)
    path = tmp_path_factory.mktemp("pruned") / "pruned.pt"
    save_model(path, loaded.recognizer, loaded.tokenizer)
    return path


@pytest.fixture(scope="module")
def exported(pruned_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "device"
    export_model(pruned_model, out, int8=True)
    return out


def test_the_numpy_front_end_gives_torchs_features(base_model, tiny_corpus):
    recognizer = load_model(base_model).recognizer
    config = json.loads(json.dumps(recognizer.features.config.__dict__))
    filterbank = recognizer.features.mel_scale.fb.numpy()
    audio = load_evaluation_audio(tiny_corpus["test"], recognizer.sample_rate, 8)
    for waveform in [*audio.waveforms, audio.waveforms[0][:300]]:  # the last one is shorter than n_fft
        with torch.inference_mode():
            expected, _ = recognizer.features(waveform[None], torch.tensor([waveform.shape[0]]))
        np.testing.assert_allclose(
            log_mel(waveform.numpy(), config, filterbank), expected[0].numpy(), atol=1e-3
        )


def test_the_exported_encoder_gives_the_torch_models_emissions(pruned_model, exported, tiny_corpus):
    recognizer = load_model(pruned_model).recognizer
    manifest = json.loads((exported / "export.json").read_text())
    assert manifest["widths"] == recognizer.encoder.config.lstm_hidden != [48]  # pruned, uneven
    float32, int8 = ExportedModel(exported), ExportedModel(exported, precision="int8")
    assert (exported / "encoder.int8.onnx").stat().st_size < 0.5 * (exported / "encoder.onnx").stat().st_size
    audio = load_evaluation_audio(tiny_corpus["test"], recognizer.sample_rate, 8)
    for waveform in audio.waveforms:
        with torch.inference_mode():
            expected, _ = recognizer(waveform[None], torch.tensor([waveform.shape[0]]))
        np.testing.assert_allclose(float32.log_probs(waveform.numpy()), expected[0].numpy(), atol=1e-4)
        assert int8.log_probs(waveform.numpy()).shape == expected[0].shape


def test_transcribe_runs_an_export_folder_like_the_model(
    pruned_model, exported, tiny_corpus, tmp_path, capsys
):
    wavs = [u.audio_filepath for u in read_manifest(tiny_corpus["test"])[:6]]

    def texts(model: str, *options: str) -> list[str]:
        out = tmp_path / "out.jsonl"
        assert main(["transcribe", model, *wavs, "--format", "jsonl", "--out", str(out), *options]) == 0
        return [json.loads(line)["text"] for line in out.read_text().splitlines()]

    torch_texts = texts(str(pruned_model), "--decoder", "own", "--beam-width", "4")
    assert texts(str(exported), "--decoder", "own", "--beam-width", "4") == torch_texts
    assert len(texts(str(exported), "--precision", "int8")) == len(wavs)
    capsys.readouterr()


# Run in a fresh interpreter where torch, torchaudio and lightning cannot be imported (as on a board with
# only `pip install 'speechprune[device]'`): the CLI transcribes an export folder, the agent's measurement
# runs, and neither loads torch.
NO_TORCH = """
import json, sys
for name in ("torch", "torchaudio", "lightning"):
    sys.modules[name] = None
from speechprune.cli import main
export, out, *wavs = sys.argv[1:]
code = main(["transcribe", export, *wavs, "--decoder", "flashlight", "--beam-width", "8",
             "--format", "jsonl", "--out", out])
import base64, soundfile
from speechprune.device.agent import measure_request
from pathlib import Path
files = {f.name: base64.b64encode(f.read_bytes()).decode() for f in Path(export).iterdir()}
audio = [base64.b64encode(soundfile.read(w, dtype="float32")[0].tobytes()).decode() for w in wavs]
job = {"export": files, "backend": "own", "settings": {"beam_width": 4}, "precision": "int8"}
answer = measure_request({"jobs": {"a": job}, "audio": audio, "sample_rate": 8000, "repeats": 1}, 1)
print(json.dumps({"code": code, "agent_texts": answer["jobs"]["a"]["texts"],
                  "loaded": sorted(m for m in ("torch", "torchaudio", "lightning") if sys.modules.get(m))}))
"""


def test_the_device_runtime_runs_without_torch(exported, tiny_corpus, tmp_path):
    wavs = [u.audio_filepath for u in read_manifest(tiny_corpus["test"])[:4]]
    out = tmp_path / "board.jsonl"
    completed = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(exported), str(out), *wavs],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["code"] == 0 and result["loaded"] == [] and len(result["agent_texts"]) == len(wavs)
    board = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    host = out.with_name("host.jsonl")
    options = ["--decoder", "flashlight", "--beam-width", "8", "--format", "jsonl", "--out", str(host)]
    assert main(["transcribe", str(exported), *wavs, *options]) == 0
    assert board == [json.loads(line)["text"] for line in host.read_text().splitlines()]


def test_a_damaged_export_folder_is_refused(exported, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in exported.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    data = bytearray((broken / "encoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "encoder.onnx").write_bytes(bytes(data))
    with pytest.raises(SpeechpruneError, match="encoder.onnx: missing, or its SHA-256 does not match"):
        ExportedModel(broken)
    with pytest.raises(SpeechpruneError, match="not an export folder"):
        ExportedModel(tmp_path)
    with pytest.raises(SpeechpruneError, match="no int8 encoder"):
        (broken / "encoder.onnx").write_bytes((exported / "encoder.onnx").read_bytes())
        manifest = json.loads((broken / "export.json").read_text())
        del manifest["encoders"]["int8"]
        (broken / "export.json").write_text(json.dumps(manifest))
        ExportedModel(broken, precision="int8")
