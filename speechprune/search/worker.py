"""The latency worker: answers one measurement request (JSON on stdin) with one JSON line on stdout.

:class:`speechprune.search.targets.LocalTarget` starts it once per measurement, so that timings come
from a small, fresh process as on a device, not from a search process that has grown for an hour. The
request names model files, backends and decoder settings, the calibration manifest, threads, cores and
repeats (:meth:`LocalTarget.request`); nothing in it is executed. The device agent answers the same
request over the network.

    python -m speechprune.search.worker < request.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from asr.inference import load_evaluation_audio
from asr.onnx_model import ExportedModel, precision_of
from common.errors import SpeechpruneError
from decoding.backends import make_decoder
from speechprune.device.agent import measure_exported
from speechprune.search.targets import (
    TimingJob,
    measure_jobs,
    pinned_to,
    settings_from_dict,
)


def answer(request: dict) -> dict:
    """Measure the request's jobs; the answer's latencies are per-utterance means in ms."""
    calibration = request["calibration"]
    threads, repeats, warmup = int(request["threads"]), int(request["repeats"]), int(request["warmup"])
    runtime = str(request.get("runtime", "torch"))
    with pinned_to(request.get("cores")):
        audio = load_evaluation_audio(
            Path(calibration["manifest"]), int(calibration["sample_rate"]), int(calibration["limit"])
        )
        jobs = {
            name: TimingJob(Path(job["model"]), str(job["backend"]), settings_from_dict(job["settings"]))
            for name, job in request["jobs"].items()
        }
        if runtime != "torch":  # the export folders the host made, timed as the device agent times them
            precision = precision_of(runtime)
            models = {
                name: ExportedModel(job["export"], threads=threads, precision=precision)
                for name, job in request["jobs"].items()
            }
            decoders = {
                name: make_decoder(j.backend, models[name].pieces, j.settings) for name, j in jobs.items()
            }
            return {"jobs": measure_exported(models, decoders, audio.waveforms, repeats, warmup)}
        measured = measure_jobs(jobs, audio.waveforms, threads, repeats, warmup)
    return {
        "jobs": {
            name: {
                "encoder_ms": m.latency.encoder_ms,
                "decoder_ms": m.latency.decoder_ms,
                "audio_seconds_mean": m.latency.audio_seconds_mean,
                "texts": m.texts,
            }
            for name, m in measured.items()
        }
    }


def main() -> int:
    try:
        request = json.loads(sys.stdin.read())
        print(json.dumps(answer(request)))
    except (SpeechpruneError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        print(f"speechprune latency worker: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
