"""``speechprune search``: the latency-budgeted search over layer widths (:mod:`speechprune.search`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechprune.cli.options import add_config_options


def _spread(checks: list[float] | None) -> str:
    """ " (median of N runs: lo-hi)" when the final check was repeated (search.final_checks > 1)."""
    if not checks or len(checks) < 2:
        return ""
    return f" (median of {len(checks)} runs: {min(checks):.3f}-{max(checks):.3f})"


def _search(args: argparse.Namespace) -> int:
    from asr.config import load_config
    from speechprune.search.job import RESULTS_NAME, run_search

    config = load_config(args.config, args.set)
    results = run_search(config, args.model, args.exp_dir, test_manifests=args.test)
    noise = results["noise_floor"]["copy_end_to_end_ratio"]
    print(
        f"unpruned: {results['unpruned']['encoder_ms']:.2f} + {results['unpruned']['decoder_ms']:.3f} ms "
        f"per utterance ({results['unpruned']['ms_per_second']:.2f} ms/s); noise floor: a second copy of "
        f"it timed {noise:.3f}x{_spread(results['noise_floor'].get('copy_end_to_end_ratio_checks'))}"
    )
    for final in results["finals"]:
        print(
            f"{final['method']} {final['budget']}: {final['candidate']} widths {final['widths']} "
            "-> end-to-end "
            f"{final['end_to_end_ratio']:.3f}x unpruned{_spread(final.get('end_to_end_ratio_checks'))}, "
            f"objective/budget {final['objective_ratio_to_budget']:.3f}, "
            f"calibration WER {100 * final['wer_calibration']:.2f}% -> {final['model']}"
        )
    for unmet in results["unmet_budgets"]:
        print(
            f"speechprune search: budget {unmet['budget']} not reached by {unmet['method']}; "
            f"closest candidate {unmet['closest']} "
            f"at {unmet['closest_value']} ({results['stop_reason']})",
            file=sys.stderr,
        )
    print(f"{Path(args.exp_dir) / RESULTS_NAME}")
    return 1 if results["unmet_budgets"] else 0


def _search_study(args: argparse.Namespace) -> int:
    import yaml

    from asr.config import apply_overrides, load_config
    from common.errors import SpeechpruneError
    from speechprune.search.study import StudyConfig, run_study, write_study_report

    config = load_config(args.config, args.set)
    if not args.study.is_file():
        raise SpeechpruneError(f"{args.study}: no such study file")
    try:
        values = yaml.safe_load(args.study.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise SpeechpruneError(f"{args.study}: invalid YAML ({error})") from None
    if not isinstance(values, dict):
        raise SpeechpruneError(f"{args.study}: a study file is a mapping (budgets, decoders, methods, runs)")
    study = StudyConfig.from_dict(apply_overrides(values, args.study_set), str(args.study))
    if args.report_only:
        report = write_study_report(study, Path(args.exp_dir), {})
    else:
        report = run_study(config, study, args.model, Path(args.exp_dir), args.test)
    print(Path(args.exp_dir) / "study" / "study.md")
    print((Path(args.exp_dir) / "study" / "study.md").read_text(encoding="utf-8"))
    for name, error in report["failed_runs"].items():
        print(f"speechprune search-study: run {name} failed: {error}", file=sys.stderr)
    return 1 if report["failed_runs"] or report["missing_runs"] else 0


def register(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser(
        "search",
        help="latency-budgeted search over layer widths, encoder + decoder latency measured on the target",
        description="Archtree-style tree search: each candidate shrinks one layer, is fine-tuned briefly and "
        "timed on the target (encoder, and decoder on its own emissions with your decoder settings); the "
        "best model meeting each budget gets a final fine-tune and is re-measured. Resumes when rerun; exit "
        "status 1 when a budget could not be met (the closest candidate is named).",
    )
    search.add_argument("model", help="the trained model.pt to search from")
    add_config_options(
        search,
        "search, decoder, target, regularizer, data, augment, optim, trainer",
        "folder for the tree, candidates, final models and results",
        "search.objective=encoder",
    )
    search.add_argument(
        "--test", type=Path, nargs="*", default=[], help="manifests to score the final models on (WER)"
    )
    search.set_defaults(handler=_search, resumable=True)

    study = commands.add_parser(
        "search-study",
        help="the search's study: every (decoder setting, method) search, one table and two plots",
        description="Runs one search per [decoder, method] pair of the study file (each in its own folder "
        "under --exp-dir, sharing a fine-tune cache; resumes run by run), then writes study/study.md, "
        ".csv, .json and the plots: test WER against measured end-to-end latency with the budgets, and "
        "encoder/decoder time per method.",
    )
    study.add_argument("model", help="the trained model.pt to search from")
    study.add_argument(
        "--study", type=Path, required=True, help="study YAML: budgets, decoders, methods, runs"
    )
    add_config_options(
        study,
        "the search config every run starts from",
        "folder for every run, the fine-tune cache's default place and the study report",
        "search.max_depth=4",
    )
    study.add_argument(
        "--study-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the study file, e.g. --study-set decoders.wide.lm_path=LM (repeatable)",
    )
    study.add_argument(
        "--test", type=Path, nargs="*", default=[], help="manifests to score the final models on (WER)"
    )
    study.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite the table and plots from the runs' results files (no search, no measuring)",
    )
    study.set_defaults(handler=_search_study, resumable=True)
