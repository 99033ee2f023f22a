"""The device runtime on arm64: transcripts of the exported model must equal the x86 runtime's.

``prepare`` (on the host, with torch): export the model, write a few utterances at the model's rate as
``.npy`` and the x86 runtime's transcripts, greedy and with flashlight's beam search (with ``--lm``, a
piece LM fused). ``run`` (on the arm64 userland, with the device extra's packages only: onnxruntime,
numpy, flashlight-text, soundfile, soxr; no torch): transcribe the same inputs with
:class:`asr.transcriber.Transcriber`, the class ``speechprune transcribe`` runs, and compare.
A functional check: emulated timings mean nothing, so none are printed. See ``bench/aarch64_check.sh``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

import numpy as np

PRECISIONS = ("float32", "int8")


def _runtimes(folder: Path) -> dict[str, object]:
    """Every (precision, decoder) the check compares, as transcribers of the export in ``folder``."""
    from asr.transcriber import Transcriber
    from decoding.backends import DecoderSettings

    beam = {"beam_width": 8, "beam_threshold": 10.0, "cutoff_top_n": 40}
    lm = folder / "export" / "lm.arpa"
    if lm.is_file():
        beam |= {"lm_path": lm, "lm_unit": "piece", "alpha": 0.5}
    decoders = {"greedy": None, "flashlight" + ("+lm" if lm.is_file() else ""): DecoderSettings(**beam)}
    return {
        f"{precision} {name}": Transcriber(
            folder / "export", precision=precision, decoder=name.split("+")[0], settings=settings
        )
        for precision in PRECISIONS
        for name, settings in decoders.items()
    }


def prepare(model: str, manifest: str, count: int, out: Path, lm: Path | None) -> None:
    from asr.export import export_model
    from asr.inference import load_evaluation_audio

    export_model(model, out / "export", int8=True)
    if lm is not None:
        shutil.copyfile(lm, out / "export" / "lm.arpa")
    runtimes = _runtimes(out)
    audio = load_evaluation_audio(manifest, next(iter(runtimes.values())).sample_rate, count)
    expected = {}
    for index, waveform in enumerate(audio.waveforms):
        name = f"utt{index:02d}.npy"
        np.save(out / name, waveform.numpy().astype(np.float32), allow_pickle=False)
        expected[name] = {key: r.transcribe([waveform.numpy()])[0].text for key, r in runtimes.items()}
    (out / "expected.json").write_text(json.dumps({"machine": platform.machine(), "transcripts": expected}))
    print(f"prepared {len(expected)} utterances x {len(runtimes)} runtimes on {platform.machine()} in {out}")


def run(folder: Path) -> int:
    runtimes = _runtimes(folder)
    expected = json.loads((folder / "expected.json").read_text())
    failures = 0
    for key, runtime in runtimes.items():
        for name, texts in expected["transcripts"].items():
            text = runtime.transcribe([np.load(folder / name, allow_pickle=False)])[0].text
            same = text == texts[key]
            failures += not same
            verdict = "==" if same else "!="
            print(f"{platform.machine()} {key} {name}: {text!r} {verdict} {expected['machine']}")
    print(f"torch imported: {'torch' in sys.modules}; {failures} transcript(s) differ")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    actions = parser.add_subparsers(dest="action", required=True)
    prep = actions.add_parser("prepare")
    prep.add_argument("model")
    prep.add_argument("manifest")
    prep.add_argument("--count", type=int, default=5)
    prep.add_argument("--lm", type=Path, help="a piece-level ARPA LM for the flashlight decoder")
    prep.add_argument("--out", type=Path, required=True)
    check = actions.add_parser("run")
    check.add_argument("folder", type=Path)
    args = parser.parse_args()
    if args.action == "prepare":
        prepare(args.model, args.manifest, args.count, args.out, args.lm)
        return 0
    return run(args.folder)


if __name__ == "__main__":
    sys.exit(main())
