"""The ``speechprune`` command line: one module per command group, assembled here.

Exit status: 0 all done; 1 done, but something is incomplete (a batch skipped unreadable files, a budget
was out of reach, a study run failed) and says what; 2 the input is the user's to fix (one line names
the file or option, nothing was started or nothing was half-written); 130 Ctrl-C; 143 SIGTERM (jobs
that resume say so: rerunning the same command continues them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from common.errors import SpeechpruneError, Terminated
from common.signals import install_sigterm_handler
from speechprune.cli import data, decoding, device, search, study, training

COMMAND_GROUPS = (data, training, decoding, study, search, device)
# The extras of pyproject.toml that provide each optional import (the base install runs export folders).
EXTRA_OF_MODULE = {
    "torch": "train",
    "torchaudio": "train",
    "lightning": "train",
    "sentencepiece": "train",
    "jiwer": "train",
    "matplotlib": "train",
    "espeakng_loader": "train",
    "kenlm": "train",
    "onnx": "export",
    "onnxruntime": "device",
    "flashlight": "device",
}
DESCRIPTION = (
    "Decoder-aware structured pruning of CTC speech recognizers: prepare data, train, prune, decode, "
    "measure the encoder/decoder trade-off and report it."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechprune", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def user_message(error: BaseException) -> str:
    """The line to show: errors re-raised from data-loader workers carry the worker's traceback first."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    if len(lines) > 1 and "Traceback" in str(error):
        return lines[-1].split(": ", 1)[-1]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    hint = "; rerun the same command to resume" if getattr(args, "resumable", False) else ""
    install_sigterm_handler()
    try:
        return handler(args)
    except SpeechpruneError as error:
        print(f"speechprune {args.command}: error: {user_message(error)}", file=sys.stderr)
        return 2
    except Terminated as error:
        print(f"speechprune {args.command}: {error}{hint}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"speechprune {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:
        module = (error.name or "").split(".")[0]
        if module not in EXTRA_OF_MODULE:
            raise
        extra = EXTRA_OF_MODULE[module]
        print(
            f"speechprune {args.command}: error: needs {module}, which this install lacks: "
            f"pip install 'speechprune[{extra}]'",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
