"""int8 on top of pruning: torch float32 and int8 (``torch.ao`` dynamic quantization) against the exported
ONNX encoder in float32 and int8.

Why: quantization, like pruning, changes the emissions, and with them the decoder's work. So every model
is measured end to end: encoder ms (numpy front end + onnxruntime for the exports, torch for the model
file; batch 1, one thread), decoder ms on that model's own emissions, the own decoder's search size
(extensions per frame), output entropy and WER. Models and runtimes are interleaved utterance by
utterance in one run (:func:`common.measure.interleaved`); the ratios are to torch float32 of the same
model.

    python bench/export_int8.py --models recipes/fsdd_digits/exp/baseline/model.pt \
        --manifest recipes/fsdd_digits/data/corpus/test.jsonl --limit 200
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch

from asr.checkpoint import load_model
from asr.export import export_model
from asr.inference import encode_each, encoder_steps, load_evaluation_audio, stack_emissions
from asr.metrics import error_counts
from asr.onnx_model import ExportedModel
from asr.timing import DecoderSteps, exported_steps
from common.measure import device_tags, interleaved
from decoding.backends import DecoderSettings, make_decoder
from decoding.entropy import entropy_report
from decoding.search_stats import aggregate_stats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", required=True, help="model.pt files (pruned or not)")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beam-threshold", type=float, default=10.0, help="own and flashlight decoders")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = DecoderSettings(beam_width=16, cutoff_top_n=28, beam_threshold=args.beam_threshold)
    with tempfile.TemporaryDirectory() as folder:
        steps, emissions, labels = {}, {}, {}
        audio = None
        for index, path in enumerate(args.models):
            loaded = load_model(path)
            audio = audio or load_evaluation_audio(args.manifest, loaded.recognizer.sample_rate, args.limit)
            out = Path(folder) / f"m{index}"
            export_model(path, out, int8=True)
            name = Path(path).stem if Path(path).stem != "model" else Path(path).parent.name
            runtimes = {
                "torch fp32": None,
                "torch int8": "torch",
                "onnx fp32": "float32",
                "onnx int8": "int8",
            }
            for runtime, precision in runtimes.items():
                key = f"{name} | {runtime}"
                labels[key] = (name, runtime, loaded.tokenizer)
                if precision in (None, "torch"):
                    recognizer = loaded.recognizer
                    if precision == "torch":  # torch.ao dynamic quantization of the LSTMs and the head
                        recognizer = torch.ao.quantization.quantize_dynamic(
                            copy.deepcopy(recognizer), {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8
                        )
                    steps[key] = encoder_steps(recognizer, audio.waveforms)
                    emissions[key] = encode_each(recognizer, audio.waveforms)
                else:
                    exported = ExportedModel(out, threads=1, precision=precision)
                    steps[key] = exported_steps(exported, audio.waveforms)
                    emissions[key] = [
                        torch.from_numpy(exported.log_probs(w.numpy())) for w in audio.waveforms
                    ]
        encoder = interleaved(steps, repeats=args.repeats, warmup=1, threads=1)
        decoders = {
            backend: {
                key: DecoderSteps(make_decoder(backend, labels[key][2], settings), emissions[key])
                for key in steps
            }
            for backend in ("flashlight", "own")
        }
        decoder_ms = {
            backend: interleaved(rounds, repeats=args.repeats, warmup=1)
            for backend, rounds in decoders.items()
        }
    tags = device_tags(1)
    print(f"{tags['cpu']}, 1 thread, {len(audio.waveforms)} utterances, medians of {args.repeats} repeats")
    print(
        "| model | runtime | encoder ms | vs torch | flashlight ms | own decoder ms | own ext./frame | "
        "entropy | WER (flashlight) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for key in steps:
        name, runtime, _ = labels[key]
        base = encoder[f"{name} | torch fp32"].mean_ms
        log_probs, lengths = stack_emissions(emissions[key])
        entropy = entropy_report(log_probs, lengths, blank_id=0)["entropy_mean"]
        stats = aggregate_stats([r.stats for r in decoders["own"][key].decoded])
        wer = error_counts(audio.references, [r.text for r in decoders["flashlight"][key].decoded]).wer
        print(
            f"| {name} | {runtime} | {encoder[key].mean_ms:.2f} | {encoder[key].mean_ms / base:.2f} | "
            f"{decoder_ms['flashlight'][key].mean_ms:.3f} | {decoder_ms['own'][key].mean_ms:.2f} | "
            f"{stats['extensions_per_frame']:.2f} | {entropy:.3f} | {100 * wer:.2f}% |"
        )


if __name__ == "__main__":
    main()
