"""The latency agent: ``speechprune device serve`` on the board answers "time these exported models with
this decoder configuration on these calibration inputs" for a search or a study running elsewhere.

It is a network service, so it is deliberately narrow:

- every request carries the token (``Authorization: Bearer ...``, compared in constant time); the agent
  refuses to start without one unless it listens on loopback only;
- a request body is at most ``max_request_bytes`` (checked from its Content-Length before anything is
  read) and must be JSON: ONNX encoders, the filterbank and calibration audio travel as base64 of raw
  bytes (float32 arrays, ONNX protobuf) that are parsed, never pickled, imported or executed;
- one measurement runs at a time (a lock), so two clients never time each other;
- every failure is an HTTP status with a one-line JSON error, and the agent goes on serving.

``POST /measure`` takes ``{"jobs": {name: {"export": {file: base64}, "backend": str, "settings": {...},
"lm": base64, "lexicon": base64}},
"audio": [base64 float32, ...], "sample_rate": int, "threads": int, "repeats": int, "warmup": int}`` and
answers ``{"jobs": {name: {"encoder_ms", "decoder_ms", "audio_seconds_mean", "texts"}}, "device": {...}}``
(the same answer as the local worker's). ``GET /describe`` answers the device's description. The
decoder's LM (ARPA or KenLM binary) and lexicon, when its settings use them, come in the job as files; a
path in the settings is refused, so a client never makes the agent read a file of the board's.

Nothing here imports torch: a board runs the agent with ``pip install 'speechprune[device]'``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import tempfile
import threading
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from asr.onnx_model import MANIFEST_NAME, ExportedModel
from asr.timing import DecoderSteps, exported_steps
from common.errors import SpeechpruneError
from common.measure import device_tags, interleaved
from decoding.backends import DecoderBackend, DecoderSettings, make_decoder

MAX_REQUEST_BYTES = 256 * 1024 * 1024
EXPORT_FILES = {MANIFEST_NAME, "encoder.onnx", "encoder.int8.onnx", "mel_filterbank.npy"}
DECODER_FILES = {"lm": "lm_path", "lexicon": "lexicon_path"}  # job key -> the DecoderSettings field it fills


class RequestError(Exception):
    """A request the agent refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _decode(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{what}: not base64") from None


def _decoder_settings(name: str, job: dict[str, Any], folder: Path) -> DecoderSettings:
    """The job's decoder settings, with its uploaded LM and lexicon written to ``folder``."""
    options = dict(job.get("settings") or {})
    for key, field in DECODER_FILES.items():
        if options.get(field) is not None:
            message = f"job {name!r}: {field} names a path; send the file as the job's {key!r}"
            raise RequestError(HTTPStatus.BAD_REQUEST, message)
        if key in job:
            path = folder / f"decoder_{key}"
            path.write_bytes(_decode(job[key], f"job {name!r} {key}"))
            options[field] = path
    try:
        return DecoderSettings(**options)
    except (TypeError, ValueError) as error:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"job {name!r}: decoder settings: {error}") from None


def measure_request(request: dict[str, Any], threads_cap: int) -> dict[str, Any]:
    """Unpack a /measure request into a scratch folder, measure every job interleaved, answer."""
    try:
        sample_rate = int(request["sample_rate"])
        threads = min(int(request.get("threads", 1)), threads_cap)
        repeats, warmup = int(request.get("repeats", 3)), int(request.get("warmup", 1))
        waveforms = [np.frombuffer(_decode(a, "audio"), dtype=np.float32).copy() for a in request["audio"]]
        jobs = dict(request["jobs"])
    except (KeyError, TypeError, ValueError) as error:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"malformed request ({error})") from None
    if not waveforms or not jobs or not 1 <= repeats <= 20 or not 0 <= warmup <= 5 or threads < 1:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, "need audio, jobs, 1-20 repeats, 0-5 warm-ups, threads >= 1"
        )
    if any(w.size == 0 or not np.isfinite(w).all() for w in waveforms):
        raise RequestError(HTTPStatus.BAD_REQUEST, "audio: empty or non-finite waveform")
    with tempfile.TemporaryDirectory(prefix="speechprune-agent-") as scratch:
        models, decoders = {}, {}
        for name, job in jobs.items():
            folder = Path(scratch) / f"job{len(models)}"
            folder.mkdir()
            files = job.get("export") if isinstance(job, dict) else None
            if not isinstance(files, dict) or not set(files) <= EXPORT_FILES or MANIFEST_NAME not in files:
                raise RequestError(
                    HTTPStatus.BAD_REQUEST, f"job {name!r}: export files must be {sorted(EXPORT_FILES)}"
                )
            for file, content in files.items():
                (folder / file).write_bytes(_decode(content, f"job {name!r} {file}"))
            try:
                models[name] = ExportedModel(
                    folder, threads=threads, precision=str(job.get("precision", "float32"))
                )
                if models[name].sample_rate != sample_rate:
                    raise SpeechpruneError(
                        f"model rate {models[name].sample_rate} Hz, audio {sample_rate} Hz"
                    )
                settings = _decoder_settings(name, job, folder)
                decoders[name] = make_decoder(str(job["backend"]), models[name].pieces, settings)
            except SpeechpruneError as error:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"job {name!r}: {error}") from None
            except RequestError:
                raise
            except Exception as error:  # onnxruntime rejects a malformed graph with its own exception types
                raise RequestError(
                    HTTPStatus.BAD_REQUEST, f"job {name!r}: unusable model ({type(error).__name__})"
                ) from None
        answers = measure_exported(models, decoders, waveforms, repeats, warmup)
    return {"jobs": answers, "device": device_tags(threads)}


def measure_exported(
    models: Mapping[str, ExportedModel],
    decoders: Mapping[str, DecoderBackend],
    waveforms: Sequence[Any],
    repeats: int,
    warmup: int,
) -> dict[str, dict[str, Any]]:
    """Per job: encoder latency of the exported model (the jobs interleaved utterance by utterance), then
    decoder latency on that model's own emissions (interleaved alike), both per-utterance means in ms, and
    the texts decoded while timed. The agent's answer and the local worker's for exported models."""
    encoders = interleaved(
        {name: exported_steps(model, waveforms) for name, model in models.items()},
        repeats=repeats,
        warmup=warmup,
    )
    steps = {name: DecoderSteps(decoders[name], model.encode(waveforms)) for name, model in models.items()}
    decoder_times = interleaved(steps, repeats=repeats, warmup=warmup)
    sample_rate = next(iter(models.values())).sample_rate if models else 1
    audio_seconds = float(np.mean([np.asarray(w).size for w in waveforms])) / sample_rate
    return {
        name: {
            "encoder_ms": encoders[name].mean_ms,
            "decoder_ms": decoder_times[name].mean_ms,
            "audio_seconds_mean": audio_seconds,
            "texts": [r.text for r in steps[name].decoded],
        }
        for name in models
    }


class Agent(ThreadingHTTPServer):
    """The HTTP server: a token, a size cap, one measurement at a time."""

    daemon_threads = True

    def __init__(self, host: str, port: int, token: str | None, max_request_bytes: int, threads: int) -> None:
        loopback = ipaddress.ip_address(host).is_loopback if host != "localhost" else True
        if not token and not loopback:
            raise SpeechpruneError(f"--host {host}: an agent reachable from the network needs --token-file")
        super().__init__((host, port), AgentHandler)
        self.token = token or ""
        self.max_request_bytes = max_request_bytes
        self.threads = threads
        self.lock = threading.Lock()


class AgentHandler(BaseHTTPRequestHandler):
    server: Agent

    def log_message(self, format: str, *args: Any) -> None:  # one line per request, no body
        print(f"agent: {self.address_string()} {format % args}", flush=True)

    def _answer(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {self.server.token}"
        if not self.server.token:
            return True  # loopback only, started without a token
        return hmac.compare_digest(given.encode(), expected.encode())

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if not self._authorized():
            return self._answer(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong token"})
        if self.path != "/describe":
            return self._answer(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {self.path}"})
        self._answer(HTTPStatus.OK, {"device": device_tags(self.server.threads)})

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return self._answer(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong token"})
        if self.path != "/measure":
            return self._answer(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {self.path}"})
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._answer(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length required"})
        if not 0 < length <= self.server.max_request_bytes:
            self.close_connection = True
            return self._answer(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": f"request of {length} bytes; the agent takes 1 to {self.server.max_request_bytes}"},
            )
        body = self.rfile.read(length)
        if len(body) < length:  # the client went away mid-request: nothing to answer
            self.close_connection = True
            return None
        try:
            request = json.loads(body)
            if not isinstance(request, dict):
                raise RequestError(HTTPStatus.BAD_REQUEST, "the request must be a JSON object")
            with self.server.lock:
                answer = measure_request(request, self.server.threads)
        except json.JSONDecodeError as error:
            return self._answer(HTTPStatus.BAD_REQUEST, {"error": f"not JSON ({error.msg})"})
        except RequestError as error:
            return self._answer(error.status, {"error": str(error)})
        self._answer(HTTPStatus.OK, answer)


def serve(host: str, port: int, token: str | None, max_request_bytes: int, threads: int) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM)."""
    agent = Agent(host, port, token, max_request_bytes, threads)
    print(f"agent: listening on {host}:{agent.server_address[1]} ({threads} thread(s))", flush=True)
    try:
        agent.serve_forever()
    finally:
        agent.server_close()
