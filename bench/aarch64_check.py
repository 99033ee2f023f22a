"""The device runtime on arm64: transcripts of the exported model must equal the x86 runtime's.

``prepare`` (on the host, with torch): export the model, write a few utterances at the model's rate as
``.npy`` and the x86 runtime's best-path transcripts. ``run`` (on the arm64 userland, with onnxruntime and
numpy only, no torch): transcribe the same inputs with :class:`asr.onnx_model.ExportedModel` and compare.
A functional check: emulated timings mean nothing, so none are printed. See ``bench/aarch64_check.sh``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np


def prepare(model: str, manifest: str, count: int, out: Path) -> None:
    from asr.export import export_model
    from asr.inference import load_evaluation_audio
    from asr.onnx_model import ExportedModel

    export_model(model, out / "export", int8=True)
    runtime = {p: ExportedModel(out / "export", precision=p) for p in ("float32", "int8")}
    audio = load_evaluation_audio(manifest, runtime["float32"].sample_rate, count)
    expected = {}
    for index, waveform in enumerate(audio.waveforms):
        name = f"utt{index:02d}.npy"
        np.save(out / name, waveform.numpy().astype(np.float32), allow_pickle=False)
        expected[name] = {p: r.greedy_text(waveform.numpy()) for p, r in runtime.items()}
    (out / "expected.json").write_text(json.dumps({"machine": platform.machine(), "transcripts": expected}))
    print(f"prepared {len(expected)} utterances on {platform.machine()} in {out}")


def run(folder: Path) -> int:
    from asr.onnx_model import ExportedModel

    assert "torch" not in sys.modules
    expected = json.loads((folder / "expected.json").read_text())
    failures = 0
    for precision in ("float32", "int8"):
        runtime = ExportedModel(folder / "export", precision=precision)
        for name, texts in expected["transcripts"].items():
            text = runtime.greedy_text(np.load(folder / name, allow_pickle=False))
            same = text == texts[precision]
            failures += not same
            verdict = "==" if same else "!="
            print(f"{platform.machine()} {precision} {name}: {text!r} {verdict} {expected['machine']}")
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
    prep.add_argument("--out", type=Path, required=True)
    check = actions.add_parser("run")
    check.add_argument("folder", type=Path)
    args = parser.parse_args()
    if args.action == "prepare":
        prepare(args.model, args.manifest, args.count, args.out)
        return 0
    return run(args.folder)


if __name__ == "__main__":
    sys.exit(main())
