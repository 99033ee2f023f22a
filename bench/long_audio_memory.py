"""Peak memory of ``speechprune transcribe`` on long recordings: chunked (the default) against whole-file.

Why: a Raspberry Pi has 1-8 GB. Encoding a whole file at once needs memory proportional to its length
(features, every LSTM layer's activations); chunked encoding holds one chunk plus the emissions (about
10 MB per hour), so memory should stay flat from 30 minutes to 2 hours.

The recordings are built by repeating speech (the manifest's utterances, with pauses) at 16 kHz, so the
model's resampling to its own rate is part of the run. Each transcription runs in its own process, and
its peak resident memory (``ru_maxrss``) is read by a small wrapper process around it.

    python bench/long_audio_memory.py --model recipes/fsdd_digits/exp/baseline/model.pt \
        --manifest recipes/fsdd_digits/data/corpus/test.jsonl --minutes 30 120
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from asr.audio import read_audio
from asr.data.manifest import read_manifest

RATE = 16000
PEAK_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def write_long_file(path: Path, manifest: Path, minutes: float) -> float:
    """Repeat the manifest's speech (0.3 s pauses between utterances) to ``minutes``, block by block."""
    speech = []
    for utterance in read_manifest(manifest)[:50]:
        speech += [read_audio(utterance.audio_filepath, RATE), np.zeros(int(0.3 * RATE), np.float32)]
    block = np.concatenate(speech)
    total = int(minutes * 60 * RATE)
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as handle:
        written = 0
        while written < total:
            part = block[: total - written]
            handle.write(part)
            written += part.shape[0]
    return total / RATE


def peak_mb(command: list[str]) -> tuple[float, float, int]:
    """(peak resident MB, wall seconds, exit status) of ``command`` run in a fresh process."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", PEAK_WRAPPER, *command], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    peak_kb = int(completed.stdout.strip().splitlines()[-1])
    return peak_kb / 1024, seconds, completed.returncode


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--manifest", required=True, type=Path, help="speech to repeat into long files")
    parser.add_argument("--minutes", type=float, nargs="+", default=[30.0, 120.0])
    parser.add_argument(
        "--whole-up-to", type=float, default=120.0, help="also time whole-file runs this long"
    )
    parser.add_argument("--out", type=Path, help="JSON file for the table")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for minutes in args.minutes:
            audio = Path(folder) / f"long_{minutes:g}min.wav"
            seconds = write_long_file(audio, args.manifest, minutes)
            modes = {"chunked (30 s)": []}
            if minutes <= args.whole_up_to:
                modes["whole file"] = ["--chunk-seconds", "1e9"]
            for mode, extra in modes.items():
                out = Path(folder) / "out.jsonl"
                command = [
                    sys.executable, "-m", "speechprune", "transcribe", args.model, str(audio),
                    "--format", "jsonl", "--out", str(out), "--threads", "1", *extra,
                ]  # fmt: skip
                peak, wall, status = peak_mb(command)
                words = len(json.loads(out.read_text())["text"].split()) if status == 0 else 0
                rows.append(
                    {"audio_minutes": minutes, "mode": mode, "peak_mb": round(peak), "wall_s": round(wall, 1),
                     "status": status, "words": words, "audio_s": seconds}
                )  # fmt: skip
                cells = [
                    f"{minutes:g} min",
                    mode,
                    f"{peak:,.0f} MB",
                    f"{wall:.1f} s",
                    f"exit {status}",
                    str(words),
                ]
                print("| " + " | ".join(cells) + " |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
