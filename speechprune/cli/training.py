"""Commands that train, score and adapt models: ``train``, ``prune``, ``evaluate``, ``adapt-voice``,
``self-adapt``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from speechprune.cli.options import (
    add_config_options,
    add_no_trim_option,
    output_dir,
    output_file,
    positive_float,
    positive_int,
    probability,
)


def _train(args: argparse.Namespace) -> int:
    from lightning.pytorch.utilities import rank_zero_only

    from asr.config import load_config
    from asr.metrics import blank_plateau
    from asr.training import train

    config = load_config(args.config, args.set)
    exported = train(config, args.exp_dir)
    if rank_zero_only.rank != 0:  # under DDP only rank 0 exports and writes the summary
        return 0
    summary = json.loads((Path(args.exp_dir) / "train_summary.json").read_text())
    print(f"exported model ({summary['export_checkpoint']} checkpoint): {exported}")
    plateau = blank_plateau(summary)
    if plateau:
        kind = "error" if args.fail_on_plateau else "warning"
        print(
            f"speechprune train: {kind}: {exported}: {plateau} after {summary['epochs_completed']} epochs "
            "(CTC's blank plateau); train longer (trainer.max_epochs, trainer.max_time) before pruning or "
            "timing it",
            file=sys.stderr,
        )
        return 1 if args.fail_on_plateau else 0
    return 0


def _prune(args: argparse.Namespace) -> int:
    from asr.config import load_config
    from pruning.job import prune

    config = load_config(args.config, args.set)
    snapshots = prune(config, args.model, args.exp_dir)
    print(f"pruned models: {snapshots}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from asr.evaluate import evaluate_manifest

    status = 0
    for manifest in args.manifests:
        result = evaluate_manifest(
            args.model,
            manifest,
            args.out,
            threads=args.threads,
            batch_size=args.batch_size,
            trim_edges=not args.no_trim,
        )
        summary = result.summary
        for problem in summary["bad_files"]:
            print(f"  skipped {problem}", file=sys.stderr)
        if not summary["utterances"]:
            print(
                f"speechprune evaluate: {manifest}: no utterance could be scored "
                f"({len(summary['bad_files'])} unreadable) -> {result.summary_path}",
                file=sys.stderr,
            )
            status = 1
            continue
        print(
            f"{manifest}: WER {summary['wer'] * 100:.2f}% (S {summary['substitutions']} / "
            f"D {summary['deletions']} / I {summary['insertions']})  CER {summary['cer'] * 100:.2f}%  "
            f"RTF {summary['real_time_factor']:.4f} ({summary['threads']} thread(s))  "
            f"{summary['utterances']} utterances -> {result.summary_path}"
        )
        if summary["word_errors"]:
            print(f"  most frequent: {_frequent_errors_line(summary['frequent_errors'])}")
        if summary["bad_files"]:
            status = 1
    return status


def _adapt_voice(args: argparse.Namespace) -> int:
    from asr.voice_warp import DEFAULT_FACTORS, MIN_RELATIVE_GAIN, adapt_model_file

    factors = args.factors or DEFAULT_FACTORS
    fit = adapt_model_file(args.model, args.manifest, args.out, factors)
    table = "  ".join(f"{factor:g}: {loss:.4f}" for factor, loss in sorted(fit.losses.items()))
    print(f"enrolment CTC loss by warp factor ({fit.utterances} recordings): {table}")
    if fit.factor != 1.0:
        verdict = f"warp {fit.factor:g} ({100 * fit.relative_gain():.1f}% lower loss than unwarped)"
    elif fit.lowest != 1.0:
        verdict = (
            f"unwarped: the best warp ({fit.lowest:g}) lowered the loss by "
            f"{100 * fit.relative_gain(fit.lowest):.1f}%, under {100 * MIN_RELATIVE_GAIN:g}%"
        )
    else:
        verdict = "unwarped: no warp lowered the loss"
    print(f"{args.out}: {verdict}")
    return 0


def _self_adapt(args: argparse.Namespace) -> int:
    import torch

    from asr.augment import AugmentConfig
    from asr.config import build_section, load_config
    from asr.self_adaptation import SelfAdaptationConfig, self_adapt_model_file
    from asr.transcribe import expand_inputs

    # one-line errors for inputs that match nothing and for a bad config, before any work
    recordings = expand_inputs(args.inputs, "self-adapt")
    augment = AugmentConfig()
    if args.config is not None:
        augment = build_section(load_config(args.config, []), "augment", AugmentConfig)
    given = {"keep_fraction": args.keep, "epochs": args.epochs, "rounds": args.rounds, "lr": args.lr}
    config = SelfAdaptationConfig(
        **{name: value for name, value in given.items() if value is not None}, trim_edges=not args.no_trim
    )
    torch.set_num_threads(args.threads)
    report = self_adapt_model_file(args.model, recordings, args.out, augment, config, progress=True)
    for path, reason in report.bad_files:
        print(f"  skipped {path}: {reason}", file=sys.stderr)
    too_long = f", {report.too_long} longer than {config.max_seconds:g} s left out" if report.too_long else ""
    print(
        f"{args.out}: fine-tuned on the model's transcripts of {report.kept} of {report.recordings} "
        f"recordings{too_long} (least certain unit's posterior >= {report.min_confidence:.3f}, mean "
        f"{report.mean_confidence_kept:.3f}), {config.rounds} round(s) of {config.epochs} epochs"
    )
    return 1 if report.bad_files else 0


def _warp_factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.5 <= value <= 2.0:
        raise argparse.ArgumentTypeError(f"{text}: a warp factor lies in [0.5, 2.0]")
    return value


def _frequent_errors_line(frequent: dict[str, list], top: int = 5) -> str:
    """The errors worth reading first, as "eight->four 12, two->zero 8; deleted one 20; inserted oh 3"."""
    substituted = frequent["substitutions"][:top]
    parts = [", ".join(f"{e['reference']}->{e['hypothesis']} {e['count']}" for e in substituted)]
    for kind, label in (("deletions", "deleted"), ("insertions", "inserted")):
        if frequent[kind]:
            parts.append(f"{label} " + ", ".join(f"{e['word']} {e['count']}" for e in frequent[kind][:top]))
    return "; ".join(part for part in parts if part)


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train a CTC model with Lightning",
        description="Train from a YAML config; resumes from EXP_DIR/checkpoints/last.ckpt if present and "
        "exports the best checkpoint (by validation WER) to EXP_DIR/model.pt.",
    )
    add_config_options(
        train,
        "data, tokenizer, features, model, augment, optim, trainer",
        "folder for checkpoints, logs and the exported model",
        "trainer.max_epochs=3",
    )
    train.add_argument(
        "--fail-on-plateau",
        action="store_true",
        help="exit 1 (the model is still written) when the model is still on CTC's blank plateau: even the "
        "best checkpoint's validation WER is 100%% or more, or the exported one deletes most validation "
        "words",
    )
    train.set_defaults(handler=_train, resumable=True)

    prune = commands.add_parser(
        "prune",
        help="structured pruning + fine-tuning of a trained model",
        description="Prune LSTM units (and conv channels) of MODEL physically, fine-tuning with Lightning "
        "between pruning events; writes EXP_DIR/snapshots/sparsityNN.pt at every requested sparsity. "
        "Resumes from EXP_DIR/checkpoints/last.ckpt when rerun.",
    )
    prune.add_argument("model", help="the trained model.pt (or speechprune .ckpt) to prune")
    add_config_options(
        prune,
        "data, augment, optim, trainer, prune, vib, regularizer",
        "folder for checkpoints, logs and snapshots",
        "regularizer.weight=1.0",
    )
    prune.set_defaults(handler=_prune, resumable=True)

    evaluate = commands.add_parser(
        "evaluate",
        help="WER/CER and real-time factor of a model on manifests",
        description="Greedy-decode every utterance; writes NAME.utterances.csv and NAME.summary.json per "
        "manifest. Unreadable audio files are reported and skipped (exit status 1).",
    )
    evaluate.add_argument("model", help="model.pt or a Lightning .ckpt written by speechprune")
    evaluate.add_argument("manifests", nargs="+", help="JSON-lines manifests to score")
    evaluate.add_argument("--out", type=output_dir, required=True, help="folder for the results")
    evaluate.add_argument(
        "--threads", type=positive_int, default=1, help="CPU threads for inference (default: 1)"
    )
    evaluate.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        help="utterances per forward pass; 1 gives per-utterance latency (default: 1)",
    )
    add_no_trim_option(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    adapt = commands.add_parser(
        "adapt-voice",
        help="adapt a model to one speaker's voice from a few transcribed recordings (frequency warp)",
        description="Tries frequency-warp factors (vocal tract length normalization) on MANIFEST's "
        "recordings of one speaker, keeps the one whose CTC loss on their transcripts is lowest (1.0 unless "
        "another lowers it by 5%% or more) and writes it into OUT's mel filterbank: same size and speed, "
        "runs wherever a model runs (evaluate, transcribe, export).",
    )
    adapt.add_argument("model", help="model.pt (pruned or not) or a speechprune .ckpt")
    adapt.add_argument("manifest", help="JSON-lines manifest of the speaker's recordings with their text")
    adapt.add_argument("--out", type=output_file, required=True, help="adapted model file to write")
    adapt.add_argument(
        "--factors",
        type=_warp_factor,
        nargs="+",
        help="warp factors to try (default: 0.9 to 1.1 in steps of 0.025; > 1 raises formants)",
    )
    adapt.set_defaults(handler=_adapt_voice)

    self_adapt = commands.add_parser(
        "self-adapt",
        help="adapt a model to one speaker from their untranscribed recordings (self-training)",
        description="Transcribes INPUTS (one speaker's recordings: files, folders, glob patterns) with "
        "MODEL, keeps the transcripts it is surest of (--keep, ranked by the posterior of each "
        "transcript's least certain unit) and fine-tunes on them with the training augmentation, writing "
        "OUT: a normal model file (same layers and speed) for evaluate, transcribe, prune and export. "
        "No transcript is needed. Unreadable files are skipped and listed (exit status 1).",
    )
    self_adapt.add_argument("model", help="model.pt (pruned or not) or a speechprune .ckpt")
    self_adapt.add_argument("inputs", nargs="+", help="the speaker's recordings: files, folders or patterns")
    self_adapt.add_argument("--out", type=output_file, required=True, help="adapted model file to write")
    self_adapt.add_argument(
        "--keep",
        type=probability,
        help="fraction of the recordings, most confident first, to fine-tune on (default: 0.7)",
    )
    self_adapt.add_argument("--epochs", type=positive_int, help="fine-tuning epochs (default: 4)")
    self_adapt.add_argument(
        "--rounds",
        type=positive_int,
        help="transcribe-and-fine-tune rounds, each with the model the last one adapted (default: 2)",
    )
    self_adapt.add_argument("--lr", type=positive_float, help="constant learning rate (default: 0.0002)")
    self_adapt.add_argument(
        "--config",
        help="a train config whose augment section the fine-tuning uses (default: the digits recipe's "
        "augmentation, which is AugmentConfig's defaults)",
    )
    self_adapt.add_argument("--threads", type=positive_int, default=1, help="CPU threads (default: 1)")
    add_no_trim_option(self_adapt)
    self_adapt.set_defaults(handler=_self_adapt)
