"""Options several commands share, with defaults and choices read from the dataclasses they configure.

Argument types reject bad values (zero threads, a probability of 2, NaN weights) while the command line
is parsed, so a typo costs one line of error and no work.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from common.errors import SpeechpruneError
from decoding.backends import BACKEND_NAMES, DecoderSettings

DEFAULTS = DecoderSettings()


def _check_parent(text: str, path: Path) -> None:
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, not a folder")


def output_file(text: str) -> Path:
    """A file to write: not an existing folder, in a folder that exists or can be made (checked before any
    work, so that a long run's output is never lost at the end)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name to write")
    _check_parent(text, path)
    return path


def output_dir(text: str) -> Path:
    """A folder to write results into: not an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    _check_parent(text, path)
    return path


def positive_int(text: str) -> int:
    """An integer >= 1 (threads, batch sizes, beam widths, repeats)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def finite_float(text: str) -> float:
    """A finite number (LM weights, bonuses)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value:g}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value:g}")
    return value


def probability(text: str) -> float:
    """A probability in (0, 1] (cumulative cutoffs, blank-skip thresholds)."""
    value = finite_float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1], got {value:g}")
    return value


def unit_interval(text: str) -> float:
    """A fraction in [0, 1] (the share of a corpus made one way)."""
    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {value:g}")
    return value


def tempo_factor(text: str) -> float:
    """A speed-up factor in [1, 2]: 1 plays audio as recorded, 2 twice as fast (the vocoder's sane range)."""
    value = finite_float(text)
    if not 1.0 <= value <= 2.0:
        raise argparse.ArgumentTypeError(f"expected a speed-up factor in [1, 2], got {value:g}")
    return value


def add_config_options(
    parser: argparse.ArgumentParser, sections: str, exp_dir_help: str, example: str
) -> None:
    """--config, --exp-dir and repeatable --set KEY=VALUE, shared by the config-driven jobs."""
    parser.add_argument("--config", required=True, help=f"YAML config (sections: {sections})")
    parser.add_argument("--exp-dir", required=True, help=exp_dir_help)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. --set {example} (repeatable)",
    )


def add_no_trim_option(parser: argparse.ArgumentParser) -> None:
    """``--no-trim``: encode whole recordings; by default silence before and after the speech is cut."""
    parser.add_argument(
        "--no-trim",
        action="store_true",
        help="encode each whole recording; by default silence before and after the speech is cut to a "
        "quarter second (long leading or trailing silence nearly doubled the digits model's WER); files "
        "long enough to be encoded in chunks are never cut",
    )


def add_decoder_options(parser: argparse.ArgumentParser, default_decoder: str = "greedy") -> None:
    """The decoder backend and every :class:`DecoderSettings` knob a user sets from the command line."""
    parser.add_argument(
        "--decoder",
        choices=BACKEND_NAMES,
        default=default_decoder,
        help=f"greedy, or a beam-search backend (own reports search statistics; default: {default_decoder})",
    )
    parser.add_argument(
        "--beam-width",
        type=positive_int,
        default=DEFAULTS.beam_width,
        help="beam width (default: %(default)s)",
    )
    parser.add_argument(
        "--cutoff-top-n",
        type=positive_int,
        default=DEFAULTS.cutoff_top_n,
        help="tokens tried per frame (default: %(default)s)",
    )
    parser.add_argument(
        "--cutoff-prob",
        type=probability,
        default=DEFAULTS.cutoff_prob,
        help="cumulative probability cutoff (default: %(default)s)",
    )
    parser.add_argument(
        "--beam-threshold", type=non_negative_float, help="drop hypotheses below best - this (default: off)"
    )
    parser.add_argument(
        "--blank-skip-threshold", type=probability, help="skip frames whose blank prob exceeds this"
    )
    parser.add_argument("--lm", type=Path, help="KenLM model (ARPA or binary) for shallow fusion")
    parser.add_argument(
        "--lm-unit", choices=("word", "piece"), default=DEFAULTS.lm_unit, help="units of --lm (default: word)"
    )
    parser.add_argument(
        "--lexicon",
        type=Path,
        help="flashlight lexicon (word TAB pieces; speechprune build-lexicon): only its words are decoded",
    )
    parser.add_argument(
        "--temperature",
        type=positive_float,
        default=DEFAULTS.temperature,
        help="sharpen (< 1) or flatten (> 1) the outputs before the beam search: a pruned model's search "
        "gets smaller with T < 1 (default: %(default)s)",
    )
    parser.add_argument("--alpha", type=finite_float, default=DEFAULTS.alpha, help="LM weight")
    parser.add_argument(
        "--beta", type=finite_float, default=DEFAULTS.beta, help="bonus per word (per piece for piece LMs)"
    )


def decoder_settings(args: argparse.Namespace) -> DecoderSettings | None:
    """The settings the decoder options describe; None for greedy decoding, which refuses an LM."""
    if args.decoder == "greedy":
        if args.temperature != DEFAULTS.temperature:
            raise SpeechpruneError("--temperature needs a beam-search --decoder (greedy's argmax ignores it)")
        for option, value in (("--lm", args.lm), ("--lexicon", args.lexicon)):
            if value is not None:
                raise SpeechpruneError(f"{option} needs a beam-search --decoder (greedy decoding uses none)")
        return None
    try:
        return DecoderSettings(
            beam_width=args.beam_width,
            cutoff_top_n=args.cutoff_top_n,
            cutoff_prob=args.cutoff_prob,
            beam_threshold=args.beam_threshold,
            blank_skip_threshold=args.blank_skip_threshold,
            alpha=args.alpha,
            beta=args.beta,
            lm_path=args.lm,
            lm_unit=args.lm_unit,
            lexicon_path=args.lexicon,
            temperature=args.temperature,
        )
    except ValueError as error:
        raise SpeechpruneError(f"decoder options: {error}") from None
