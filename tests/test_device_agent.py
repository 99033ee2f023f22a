"""The latency agent, on loopback only: a token is required and compared in constant time, request sizes
are capped, malformed models and disconnecting clients are answered (or dropped) without taking the
agent down, and a search's remote target gets the same answer shape as the local worker's."""

from __future__ import annotations

import base64
import json
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is part of the dev extra")

from asr.checkpoint import load_model  # noqa: E402
from asr.data.manifest import read_manifest  # noqa: E402
from asr.export import export_model  # noqa: E402
from asr.inference import encode_each, load_evaluation_audio, stack_emissions  # noqa: E402
from asr.onnx_model import ExportedModel, file_sha256  # noqa: E402
from common.errors import SpeechpruneError  # noqa: E402
from decoding.arpa import build_arpa  # noqa: E402
from decoding.backends import DecoderSettings, make_decoder  # noqa: E402
from speechprune.device.agent import Agent  # noqa: E402
from speechprune.search.targets import LocalTarget, RemoteTarget, TimingJob  # noqa: E402

TOKEN = "a-long-enough-test-token"


@pytest.fixture()
def agent():
    server = Agent("127.0.0.1", 0, TOKEN, max_request_bytes=20 * 1024 * 1024, threads=1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


def _post(url: str, body: bytes, token: str = TOKEN) -> tuple[int, dict]:
    request = urllib.request.Request(
        url + "/measure", data=body, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_token_is_required_and_off_loopback_the_agent_refuses_to_start_without_one(agent):
    url, _ = agent
    for token in ("wrong-token-of-the-same-size!", ""):
        status, answer = _post(url, b"{}", token=token)
        assert status == 401 and "token" in answer["error"]
    request = urllib.request.Request(url + "/describe", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["device"]["threads"] == 1
    with pytest.raises(SpeechpruneError, match="needs --token-file"):
        Agent("0.0.0.0", 0, None, 1024, 1)


def test_oversized_and_malformed_requests_are_refused_and_the_agent_goes_on(agent, base_model, tmp_path):
    url, server = agent
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:  # refused before the body is read
        client.sendall(
            f"POST /measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {server.max_request_bytes + 1}\r\n\r\n".encode()
        )
        reply = b""
        while chunk := client.recv(4096):  # headers and body may come in separate segments
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.0 413") and "takes 1 to" in reply
    assert _post(url, b"not json")[0] == 400
    assert _post(url, json.dumps([1, 2]).encode())[0] == 400
    # a "model" that is not ONNX, with a manifest whose digests match it: onnxruntime must refuse it
    folder = export_model(base_model, tmp_path / "export").parent
    (folder / "encoder.onnx").write_bytes(b"\x08\x07garbage that is not a graph")
    manifest = json.loads((folder / "export.json").read_text())
    manifest["encoders"] = {
        "float32": {"file": "encoder.onnx", "sha256": file_sha256(folder / "encoder.onnx")}
    }
    (folder / "export.json").write_text(json.dumps(manifest))
    job = {
        "export": {f.name: base64.b64encode(f.read_bytes()).decode() for f in folder.iterdir()},
        "backend": "greedy",
    }
    audio = [base64.b64encode(b"\x00" * 32000).decode()]
    request = {"jobs": {"bad": job}, "audio": audio, "sample_rate": 8000}
    status, answer = _post(url, json.dumps(request).encode())
    assert status == 400 and "unusable model" in answer["error"]
    job["export"]["../escape.py"] = base64.b64encode(b"print('no')").decode()
    status, answer = _post(url, json.dumps(request).encode())
    assert (
        status == 400
        and "export files must be" in answer["error"]
        and not (Path.cwd() / "escape.py").exists()
    )


def test_a_client_that_disconnects_mid_request_does_not_stop_the_agent(agent):
    url, _ = agent
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(
            f"POST /measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            'Content-Length: 100000\r\n\r\n{"jobs":'.encode()
        )
    request = urllib.request.Request(url + "/describe", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_a_remote_target_measures_exported_models_on_the_agent(agent, base_model, tiny_corpus, tmp_path):
    url, _ = agent
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    target = RemoteTarget(url, TOKEN, tiny_corpus["valid"], 6, 8000, repeats=1, warmup=0, runtime="onnx-int8")
    assert target.describe()["kind"] == "remote" and target.describe()["threads"] == 1
    settings = DecoderSettings(beam_width=4)
    measured = target.measure(
        {
            "a": TimingJob(Path(base_model), "own", settings),
            "b": TimingJob(Path(base_model), "greedy", settings),
        }
    )
    assert set(measured) == {"a", "b"}
    assert all(m.latency.encoder_ms > 0 and m.latency.decoder_ms > 0 for m in measured.values())
    model = load_model(base_model)
    audio = load_evaluation_audio(tiny_corpus["valid"], 8000, 6)
    greedy = make_decoder("greedy", model.tokenizer)(
        *stack_emissions(encode_each(model.recognizer, audio.waveforms))
    )
    # int8 emissions decoded greedily on the board: the same words as float32 torch for (nearly) all
    same = sum(a == b.text for a, b in zip(measured["b"].texts, greedy, strict=True))
    assert same >= len(greedy) - 1


def test_the_decoders_lm_travels_with_the_job_and_board_paths_are_refused(
    agent, base_model, tiny_corpus, tmp_path
):
    """flashlight with a piece LM measured on the agent decodes what the same decoder decodes locally on
    the same exported emissions; a settings path (a file of the board's) is refused."""
    url, _ = agent
    model = load_model(base_model)
    texts = [u.text for u in read_manifest(tiny_corpus["train"])]
    lm = tmp_path / "piece3.arpa"
    build_arpa(texts, 3, lm, unit="piece", tokenizer=model.tokenizer)
    settings = DecoderSettings(beam_width=8, beam_threshold=10.0, lm_path=lm, lm_unit="piece", alpha=0.5)
    target = RemoteTarget(url, TOKEN, tiny_corpus["valid"], 6, 8000, repeats=1, warmup=0)
    measured = target.measure({"lm": TimingJob(Path(base_model), "flashlight", settings)})["lm"]
    exported = ExportedModel(export_model(base_model, tmp_path / "export").parent)
    audio = load_evaluation_audio(tiny_corpus["valid"], 8000, 6)
    emissions = [exported.log_probs(w.numpy()) for w in audio.waveforms]
    decoder = make_decoder("flashlight", exported.pieces, settings)
    local = [decoder(e[None], np.array([e.shape[0]]))[0].text for e in emissions]
    assert measured.texts == local and measured.latency.decoder_ms > 0

    folder = tmp_path / "export"
    job = {
        "export": {f.name: base64.b64encode(f.read_bytes()).decode() for f in folder.iterdir()},
        "backend": "flashlight",
        "settings": {"lm_path": "/etc/passwd", "lm_unit": "piece", "alpha": 0.5},
    }
    audio_b64 = [base64.b64encode(audio.waveforms[0].numpy().tobytes()).decode()]
    request = {"jobs": {"x": job}, "audio": audio_b64, "sample_rate": 8000}
    status, answer = _post(url, json.dumps(request).encode())
    assert status == 400 and "send the file" in answer["error"]


def test_the_local_target_times_exports_as_the_agent_does(agent, base_model, tiny_corpus):
    """runtime onnx on this machine (a worker process) and on the agent: the same texts from the same
    exported emissions; the latencies themselves are compared by bench/remote_vs_local.py."""
    url, _ = agent
    jobs = {"own": TimingJob(Path(base_model), "own", DecoderSettings(beam_width=4))}
    local = LocalTarget(tiny_corpus["valid"], 6, 8000, repeats=1, warmup=0, runtime="onnx").measure(jobs)
    remote = RemoteTarget(url, TOKEN, tiny_corpus["valid"], 6, 8000, repeats=1, warmup=0).measure(jobs)
    assert local["own"].texts == remote["own"].texts and len(local["own"].texts) == 6
    assert local["own"].latency.encoder_ms > 0 and remote["own"].latency.encoder_ms > 0
    assert LocalTarget(tiny_corpus["valid"], 6, 8000).describe()["runtime"] == "torch"
    with pytest.raises(SpeechpruneError, match="a board runs exports"):
        RemoteTarget(url, TOKEN, tiny_corpus["valid"], 6, 8000, runtime="torch")
