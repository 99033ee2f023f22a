"""The output-sharpness terms against the free levers on one 50%-pruned model (a first, one-seed look).

``finetune``: remove 50% of every LSTM layer's units of the baseline (MNP, one shot), then fine-tune that
model the same number of batches, same seed and data order, once per term (``vanilla`` = lambda 0), with
the latency search's fine-tuner (and its cache). ``measure``: every fine-tuned model and the unpruned one
decoded by flashlight (beam 16, beam threshold 10: where the decoder slows with pruning) on the same
utterances, decoder timed interleaved on one pinned core; beside them the free levers on the vanilla
model: post-hoc temperature (log-probs / T, renormalized) and tighter beam thresholds. Prints WER, decoder
ms, its ratio to the unpruned model's, and the output entropy; writes ``pilot.json``.

    python bench/regularizer_pilot.py finetune --model recipes/fsdd_digits/exp/baseline/model.pt \
        --config recipes/fsdd_digits/conf/search.yaml --out recipes/fsdd_digits/exp/regularizer_pilot
    python bench/regularizer_pilot.py measure --model ... --out ... --manifest .../test.jsonl
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import torch
import yaml

from asr.checkpoint import load_model, save_model
from asr.inference import encode_batched, load_evaluation_audio
from asr.metrics import error_counts
from asr.timing import DecoderSteps
from common.fileio import write_json
from common.measure import interleaved
from decoding.backends import DecoderSettings, make_decoder
from decoding.entropy import entropy_report
from pruning.criteria import PruningContext, make_criterion
from pruning.selection import keep_top_units
from pruning.structure import prune_encoder, unit_groups
from speechprune.search.finetune import FineTuner

TERMS = {  # name -> regularizer section
    "vanilla": {"kind": "frame_entropy", "weight": 0.0},
    "entropy1": {"kind": "frame_entropy", "weight": 1.0},
    "softnonblank1": {"kind": "soft_nonblank_entropy", "weight": 1.0},
    "margin1": {"kind": "margin", "weight": 1.0, "margin": 3.0},
    "distill1": {"kind": "distillation", "weight": 1.0},
    # the lambda sweep
    "entropy0.3": {"kind": "frame_entropy", "weight": 0.3},
    "entropy3": {"kind": "frame_entropy", "weight": 3.0},
    "entropy10": {"kind": "frame_entropy", "weight": 10.0},
    "margin3": {"kind": "margin", "weight": 3.0, "margin": 3.0},
    "distill3": {"kind": "distillation", "weight": 3.0},
}
DECODER = {"beam_width": 16, "cutoff_top_n": 28, "beam_threshold": 10.0}
TEMPERATURES = (0.8, 0.6, 0.5)
THRESHOLDS = (6.0, 4.0)


def finetune(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    pruned = args.out / "pruned50.pt"
    loaded = load_model(args.model)
    encoder = loaded.recognizer.encoder
    groups = [g for g in unit_groups(encoder) if g.startswith("lstm")]
    scores = make_criterion("mnp").scores(encoder, PruningContext())
    loaded.recognizer.encoder = prune_encoder(
        encoder, keep_top_units(encoder, scores, unit_groups(encoder), 0.5, groups)
    )
    save_model(pruned, loaded.recognizer, loaded.tokenizer)
    base = yaml.safe_load(args.config.read_text())
    base = {k: v for k, v in base.items() if k in ("seed", "data", "augment", "optim", "trainer")}
    base["threads"] = args.threads
    base["optim"] = {**base["optim"], "lr": args.lr}
    for name, section in TERMS.items():
        target = args.out / f"{name}.pt"
        if target.is_file():
            print(f"{name}: done", file=sys.stderr)
            continue
        config = copy.deepcopy(base)
        config["regularizer"] = {**section, "warmup_steps": 20}
        tuner = FineTuner(
            config, loaded.tokenizer, loaded.recognizer.sample_rate, args.out / "cache", teacher=args.model
        )
        tuner(pruned, target, args.batches, seed=args.seed)
        print(f"{name}: fine-tuned {args.batches} batches -> {target}", file=sys.stderr)


def measure(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {args.core})
    torch.set_num_threads(1)
    unpruned = load_model(args.model)
    audio = load_evaluation_audio(args.manifest, unpruned.recognizer.sample_rate, args.limit)
    models = {"unpruned": unpruned} | {name: load_model(args.out / f"{name}.pt") for name in TERMS}
    emissions = {name: encode_batched(m.recognizer, audio.waveforms) for name, m in models.items()}
    pieces = unpruned.tokenizer.pieces
    variants = {name: (emissions[name], DECODER) for name in models}
    for t in TEMPERATURES:
        variants[f"vanilla T={t}"] = ([torch.log_softmax(e / t, -1) for e in emissions["vanilla"]], DECODER)
    for threshold in THRESHOLDS:
        variants[f"vanilla thr={threshold:g}"] = (
            emissions["vanilla"],
            {**DECODER, "beam_threshold": threshold},
        )
    steps = {
        name: DecoderSteps(make_decoder("flashlight", pieces, DecoderSettings(**settings)), frames)
        for name, (frames, settings) in variants.items()
    }
    times = interleaved(steps, repeats=args.repeats, warmup=1)
    rows = []
    for name, (frames, settings) in variants.items():
        lengths = torch.tensor([f.shape[0] for f in frames])
        padded = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True)
        entropy = entropy_report(padded, lengths, blank_id=unpruned.tokenizer.blank_id)
        texts = [r.text for r in steps[name].decoded]
        rows.append({
            "variant": name,
            "beam_threshold": settings["beam_threshold"],
            "wer": round(error_counts(audio.references, texts).wer, 5),
            "decoder_ms": round(times[name].mean_ms, 4),
            "entropy_mean": round(entropy["entropy_mean"], 4),
            "entropy_nonblank_mean": round(entropy["entropy_nonblank_mean"], 4),
        })  # fmt: skip
    base_ms = rows[0]["decoder_ms"]
    print(f"flashlight beam 16, {len(audio.references)} utterances of {args.manifest.name}, 1 thread on core "
          f"{args.core}, interleaved, {args.repeats} repeats")  # fmt: skip
    print(
        f"{'variant':<22} {'WER':>7} {'decoder ms':>10} {'vs unpruned':>11} {'entropy':>8} {'H nonblank':>10}"
    )
    for row in rows:
        row["decoder_vs_unpruned"] = round(row["decoder_ms"] / base_ms, 4)
        ratio, entropy, nonblank = (
            row["decoder_vs_unpruned"],
            row["entropy_mean"],
            row["entropy_nonblank_mean"],
        )
        print(
            f"{row['variant']:<22} {100 * row['wer']:6.2f}% {row['decoder_ms']:10.4f} {ratio:11.3f} "
            f"{entropy:8.4f} {nonblank:10.4f}"
        )
    write_json(args.out / "pilot.json", {"rows": rows, "utterances": len(audio.references)})


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    stages = parser.add_subparsers(dest="stage", required=True)
    tune = stages.add_parser("finetune")
    tune.add_argument("--config", type=Path, required=True, help="the search config (data, augment, optim)")
    tune.add_argument("--batches", type=int, default=200)
    tune.add_argument("--lr", type=float, default=1e-3)
    tune.add_argument("--seed", type=int, default=1)
    tune.add_argument("--threads", type=int, default=1)
    check = stages.add_parser("measure")
    check.add_argument("--manifest", type=Path, required=True)
    check.add_argument("--limit", type=int, default=200)
    check.add_argument("--repeats", type=int, default=3)
    check.add_argument("--core", type=int, default=0)
    for stage in (tune, check):
        stage.add_argument("--model", type=Path, required=True, help="the unpruned model (and teacher)")
        stage.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    (finetune if args.stage == "finetune" else measure)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
