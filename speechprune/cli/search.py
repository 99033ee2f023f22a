"""``speechprune search``: the latency-budgeted search over layer widths (:mod:`speechprune.search`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechprune.cli.options import add_config_options


def _search(args: argparse.Namespace) -> int:
    from asr.config import load_config
    from speechprune.search.job import RESULTS_NAME, run_search

    config = load_config(args.config, args.set)
    results = run_search(config, args.model, args.exp_dir, test_manifests=args.test)
    noise = results["noise_floor"]["copy_end_to_end_ratio"]
    print(
        f"unpruned: {results['unpruned']['encoder_ms']:.2f} + {results['unpruned']['decoder_ms']:.3f} ms "
        f"per utterance ({results['unpruned']['ms_per_second']:.2f} ms/s); noise floor: a second copy of "
        f"it timed {noise:.3f}x"
    )
    for final in results["finals"]:
        print(
            f"{final['method']} {final['budget']}: {final['candidate']} widths {final['widths']} "
            "-> end-to-end "
            f"{final['end_to_end_ratio']:.3f}x unpruned, "
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
    search.set_defaults(handler=_search)
