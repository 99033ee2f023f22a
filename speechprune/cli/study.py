"""Commands of the trade-off study: ``study`` (measure) and ``report`` (plots and tables from results)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.errors import SpeechpruneError
from common.fileio import write_json
from speechprune.cli.options import finite_float, non_negative_float, output_dir, positive_int


def _study(args: argparse.Namespace) -> int:
    from speechprune.study.models import collect_models

    if not args.runs and not args.models:
        raise SpeechpruneError("give pruning runs (--runs) or model files (--models) to compare")
    from speechprune.study.report import write_report, write_results
    from speechprune.study.run import run_study
    from speechprune.study.tuning import decoder_specs

    if not args.decoders.is_file():
        raise SpeechpruneError(f"{args.decoders}: no such decoder settings file (run tune-decoder first)")
    try:
        tuned = json.loads(args.decoders.read_text())["chosen"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise SpeechpruneError(f"{args.decoders}: not a tune-decoder result ({error})") from None
    wide = args.wide_threshold or None
    specs = decoder_specs(tuned, args.lm, args.alpha, args.beta, wide)
    models = collect_models(args.baseline, args.runs, args.models, args.runtimes, args.sparsities)
    if args.retune_manifest is not None and not args.retune_manifest.is_file():
        raise SpeechpruneError(f"--retune-manifest {args.retune_manifest}: no such manifest")
    unknown = sorted(set(args.retune_decoders or ()) - set(specs))
    if unknown:
        raise SpeechpruneError(f"--retune-decoders {unknown[0]}: not one of the study's {sorted(specs)}")
    rows, retuned = run_study(
        models,
        args.manifest,
        specs,
        decode_limit=args.limit,
        repeats=args.repeats,
        threads=args.threads,
        greedy_manifests=args.greedy_manifest,
        retune_manifest=args.retune_manifest,
        retune_tolerance=args.retune_tolerance,
        retune_decoders=args.retune_decoders,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [*write_results(rows, args.out), *write_report(rows, args.out)]
    if retuned:
        write_json(args.out / "retuned.json", retuned)
        paths.append(args.out / "retuned.json")
    for path in paths:
        print(path)
    return 0


def _report(args: argparse.Namespace) -> int:
    from speechprune.study.report import read_results, write_report

    for path in write_report(read_results(args.run_dir), args.run_dir):
        print(path)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    study = commands.add_parser(
        "study",
        help="WER, search size and encoder/decoder/end-to-end latency of pruned models",
        description="Measures the unpruned model, every snapshot of the given pruning runs and the given "
        "model files with every decoder configuration, on each runtime; writes results.csv/json, PNG plots "
        "and summary.md to --out.",
    )
    study.add_argument("--baseline", type=Path, required=True, help="the unpruned model.pt")
    study.add_argument(
        "--runs", type=Path, nargs="+", default=[], help="pruning run folders (EXP_DIR of prune)"
    )
    study.add_argument(
        "--sparsities",
        type=non_negative_float,
        nargs="+",
        default=None,
        help="only the runs' snapshots at these sparsities, e.g. 0.5 (default: every snapshot)",
    )
    study.add_argument(
        "--models", type=Path, nargs="+", default=[], help="more model files (e.g. a search's picks)"
    )
    study.add_argument(
        "--runtimes",
        nargs="+",
        default=["torch"],
        help="run every model on these: torch, and its ONNX export in float32 (onnx) / int8 (onnx-int8) "
        "through onnxruntime, as a board runs it (default: torch)",
    )
    study.add_argument("--manifest", type=Path, required=True, help="test manifest (decoded and timed)")
    study.add_argument(
        "--greedy-manifest", type=Path, nargs="*", default=[], help="more manifests scored with greedy WER"
    )
    study.add_argument("--decoders", type=Path, required=True, help="settings from tune-decoder")
    study.add_argument("--lm", type=Path, help="piece-level ARPA LM for the +lm decoder configurations")
    study.add_argument("--alpha", type=finite_float, default=0.5, help="LM weight (default: 0.5)")
    study.add_argument(
        "--beta", type=finite_float, default=0.0, help="own decoder's bonus per piece (default: 0)"
    )
    study.add_argument(
        "--limit",
        type=positive_int,
        default=300,
        help="utterances decoded and timed per model (default: 300)",
    )
    study.add_argument(
        "--repeats", type=positive_int, default=3, help="timed runs per utterance (default: 3)"
    )
    study.add_argument(
        "--threads", type=positive_int, nargs="+", default=[1, 2], help="encoder thread counts"
    )
    study.add_argument(
        "--wide-threshold",
        type=non_negative_float,
        default=10.0,
        help="beam threshold of the extra '-wide' decoder configurations (default: 10; 0 = none)",
    )
    study.add_argument(
        "--retune-manifest",
        type=Path,
        help="validation manifest: also run every beam-search configuration with each model's own tighter "
        "beam threshold (+thr) and sharpening temperature (+T), the fastest within that model's own WER "
        "with the fixed settings there (the free levers beside the regularizers); choices go to "
        "retuned.json",
    )
    study.add_argument(
        "--retune-decoders",
        nargs="+",
        help="re-tune only these configurations (default: every beam-search one; the own decoder's "
        "grids are slow)",
    )
    study.add_argument(
        "--retune-tolerance",
        type=non_negative_float,
        default=0.0,
        help="absolute WER the re-tuned settings may add to each model's own (default: 0)",
    )
    study.add_argument("--out", type=output_dir, required=True, help="output folder")
    study.set_defaults(handler=_study)

    report = commands.add_parser(
        "report",
        help="plots and a Markdown table from a study's results",
        description="Reads RUN_DIR/results.json and (re)writes the PNG plots and summary.md next to it.",
    )
    report.add_argument("run_dir", type=Path, help="the study's --out folder")
    report.set_defaults(handler=_report)
