"""Does a search measuring on a board through the device agent see what the local target sees?

Starts ``speechprune device serve`` on 127.0.0.1 (pinned to one core, as the local target pins its
worker), then measures the same jobs (the exported models, float32 or int8, each with its decoder) with
the local target (``runtime: onnx``, a fresh worker per call) and with the remote target, alternating
``--rounds`` times, each target twice per round in a rotating order: local2/local and remote2/remote are
the noise floors the remote/local ratio must be read against. Prints medians per job and the ratios, and
writes every round's values to ``--json``.

    python bench/remote_vs_local.py recipes/fsdd_digits/exp/baseline/model.pt PRUNED.pt \
        --calibration recipes/fsdd_digits/data/corpus/calibration.jsonl
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.fileio import write_json
from decoding.backends import DecoderSettings
from speechprune.search.targets import LocalTarget, RemoteTarget, TimingJob

WHICH = ("local", "remote", "local2", "remote2")  # each target twice per round: its own noise floor
DECODERS = {  # the search study's two decoder settings (conf/search_study.yaml)
    "tuned": ("flashlight", {"beam_width": 8, "cutoff_top_n": 28, "beam_threshold": 4.0}),
    "wide": ("flashlight", {"beam_width": 32, "cutoff_top_n": 28, "beam_threshold": 15.0, "alpha": 0.5}),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_agent(token_file: Path, port: int, core: int) -> subprocess.Popen:
    command = ["taskset", "-c", str(core), sys.executable, "-m", "speechprune", "device", "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--token-file", str(token_file), "--threads", "1"]
    agent = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(300):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return agent
        time.sleep(0.1)
    agent.kill()
    raise SystemExit("the agent did not start listening within 30 s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", type=Path, nargs="+", help="model files (e.g. unpruned and pruned)")
    parser.add_argument("--calibration", type=Path, required=True, help="calibration manifest")
    parser.add_argument("--lm", type=Path, help="piece LM of the wide decoder (omit: tuned decoder only)")
    parser.add_argument("--limit", type=int, default=40, help="calibration utterances (default: 40)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runtime", default="onnx", choices=["onnx", "onnx-int8"])
    parser.add_argument("--core", type=int, default=0, help="the core both targets time on (default: 0)")
    parser.add_argument("--json", type=Path, help="write every round's (encoder, decoder) ms here")
    args = parser.parse_args()

    jobs = {}
    for model in args.models:
        for name, (backend, options) in DECODERS.items():
            if name == "wide" and args.lm is None:
                continue
            lm = {"lm_path": args.lm, "lm_unit": "piece"} if name == "wide" else {}
            jobs[f"{model.stem}/{name}"] = TimingJob(model, backend, DecoderSettings(**options, **lm))
    with tempfile.TemporaryDirectory() as scratch:
        token_file = Path(scratch) / "token"
        token_file.write_text(secrets.token_hex(16))
        os.chmod(token_file, 0o600)
        port = free_port()
        agent = start_agent(token_file, port, args.core)
        try:
            common = {"threads": 1, "repeats": args.repeats, "warmup": 1, "runtime": args.runtime}
            local = LocalTarget(args.calibration, args.limit, 8000, cores=[args.core], **common)
            remote = RemoteTarget(f"http://127.0.0.1:{port}", token_file.read_text(), args.calibration,
                                  args.limit, 8000, **common)  # fmt: skip
            local.measure(jobs), remote.measure(jobs)  # one untimed round: page cache, first exports
            samples: dict[str, dict[str, list[tuple[float, float]]]] = {w: {} for w in WHICH}
            for round_index in range(args.rounds):
                shift = round_index % len(WHICH)  # rotate who goes first
                for which in WHICH[shift:] + WHICH[:shift]:
                    measured = (remote if which.startswith("remote") else local).measure(jobs)
                    for name, m in measured.items():
                        pair = (m.latency.encoder_ms, m.latency.decoder_ms)
                        samples[which].setdefault(name, []).append(pair)
                print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            agent.terminate()
            agent.wait(timeout=30)
    print(f"{args.runtime}, 1 thread on core {args.core}, {args.limit} utterances, {args.repeats} repeats, "
          f"{args.rounds} rounds (medians over rounds of per-utterance means)")  # fmt: skip
    header = ["local enc", "remote enc", "local dec", "remote dec"]
    print(f"{'job (ms per utterance)':<32} " + " ".join(f"{h:>10}" for h in header) + "  e2e: remote/local"
          "  local2/local  remote2/remote")  # fmt: skip
    for name in jobs:
        median = {w: [statistics.median(v[i] for v in samples[w][name]) for i in (0, 1)] for w in WHICH}
        e2e = {w: sum(median[w]) for w in WHICH}
        local_ms, remote_ms = (e2e["local"] + e2e["local2"]) / 2, (e2e["remote"] + e2e["remote2"]) / 2
        cells = [median["local"][0], median["remote"][0], median["local"][1], median["remote"][1]]
        print(
            f"{name:<32} "
            + " ".join(f"{c:10.3f}" for c in cells)
            + f"  {remote_ms / local_ms:17.3f}  {e2e['local2'] / e2e['local']:12.3f}"
            f"  {e2e['remote2'] / e2e['remote']:14.3f}"
        )
    if args.json:
        write_json(args.json, {"jobs": list(jobs), "samples": samples, "runtime": args.runtime})
    return 0


if __name__ == "__main__":
    sys.exit(main())
