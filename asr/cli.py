"""The ``speechprune`` command: corpus preparation, tokenizer, training and evaluation.

Errors that are the user's to fix (bad files, bad options) print one line naming the culprit and exit
with status 2; a batch job that skipped unreadable files exits with status 1 after writing its results.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from asr.errors import SpeechpruneError


def _prepare_fsdd(args: argparse.Namespace) -> int:
    from asr.data.fsdd import SplitRule, locate_fsdd
    from asr.data.prepare_fsdd import FsddCorpusConfig, prepare_fsdd_corpus

    fsdd_dir = locate_fsdd(args.fsdd_dir, args.download_to)
    config = FsddCorpusConfig(
        sample_rate=args.sample_rate,
        seed=args.seed,
        train_count=args.train_count,
        valid_count=args.valid_count,
        test_count=args.test_count,
        test_speaker_count=args.test_count,
        tts_count=args.tts_count,
        split_rule=SplitRule(heldout_speaker=args.heldout_speaker),
    )
    manifests = prepare_fsdd_corpus(fsdd_dir, args.out, config)
    for split, path in manifests.items():
        print(f"{split}: {path}")
    return 0


def _train_tokenizer(args: argparse.Namespace) -> int:
    from asr.data.manifest import read_manifest
    from asr.tokenizer import train_tokenizer

    texts = [u.text for manifest in args.manifests for u in read_manifest(manifest)]
    tokenizer = train_tokenizer(texts, args.model_type, args.vocab_size)
    tokenizer.save(args.out)
    print(f"{args.out}: {args.model_type} tokenizer, {tokenizer.vocab_size} units (id 0 = CTC blank)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from asr.config import load_config
    from asr.training import train

    config = load_config(args.config, args.set)
    exported = train(config, args.exp_dir)
    print(f"best model: {exported}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from asr.evaluate import evaluate_manifest

    status = 0
    for manifest in args.manifests:
        result = evaluate_manifest(
            args.model, manifest, args.out, threads=args.threads, batch_size=args.batch_size
        )
        summary = result.summary
        print(
            f"{manifest}: WER {summary['wer'] * 100:.2f}%  CER {summary['cer'] * 100:.2f}%  "
            f"RTF {summary['real_time_factor']:.4f} ({summary['threads']} thread(s))  "
            f"{summary['utterances']} utterances -> {result.summary_path}"
        )
        for problem in summary["bad_files"]:
            print(f"  skipped {problem}", file=sys.stderr)
        if summary["bad_files"]:
            status = 1
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechprune", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser(
        "prepare-fsdd",
        help="build the connected-digit corpus from FSDD",
        description="Join FSDD isolated digits into connected-digit utterances (real splits that "
        "do not leak, "
        "a held-out-speaker test split) plus eSpeak NG synthetic training speech; resumable.",
    )
    prepare.add_argument("--fsdd-dir", help="FSDD folder holding recordings/ (default: ../shared/data/fsdd)")
    prepare.add_argument("--download-to", help="download FSDD here if it is found nowhere else")
    prepare.add_argument("--out", required=True, help="output folder for WAVs and manifests")
    prepare.add_argument(
        "--sample-rate", type=int, default=8000, help="corpus sample rate in Hz (FSDD: 8000)"
    )
    prepare.add_argument("--seed", type=int, default=20240, help="seed of every random draw")
    prepare.add_argument("--train-count", type=int, default=4000, help="real training utterances")
    prepare.add_argument("--valid-count", type=int, default=300, help="validation utterances")
    prepare.add_argument("--test-count", type=int, default=600, help="utterances in each test split")
    prepare.add_argument(
        "--tts-count", type=int, default=2000, help="synthetic training utterances (0: none)"
    )
    prepare.add_argument("--heldout-speaker", default="theo", help="FSDD speaker kept out of training")
    prepare.set_defaults(handler=_prepare_fsdd)

    tokenizer = commands.add_parser("train-tokenizer", help="train SentencePiece units on transcripts")
    tokenizer.add_argument("manifests", nargs="+", help="manifests whose texts train the units")
    tokenizer.add_argument("--out", required=True, help="where to write the .model file")
    tokenizer.add_argument("--model-type", choices=("char", "unigram", "bpe"), default="char")
    tokenizer.add_argument("--vocab-size", type=int, help="units incl. blank and <unk> (unigram/bpe)")
    tokenizer.set_defaults(handler=_train_tokenizer)

    train = commands.add_parser(
        "train",
        help="train a CTC model with Lightning",
        description="Train from a YAML config; resumes from EXP_DIR/checkpoints/last.ckpt if present and "
        "exports the best checkpoint (by validation WER) to EXP_DIR/model.pt.",
    )
    train.add_argument(
        "--config",
        required=True,
        help="YAML config (sections: data, tokenizer, features, model, augment, optim, trainer)",
    )
    train.add_argument("--exp-dir", required=True, help="folder for checkpoints, logs and the exported model")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set trainer.max_epochs=3 (repeatable)",
    )
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="WER/CER and real-time factor of a model on manifests",
        description="Greedy-decode every utterance; writes NAME.utterances.csv and NAME.summary.json "
        "per manifest. "
        "Unreadable audio files are reported and skipped (exit status 1).",
    )
    evaluate.add_argument("model", help="model.pt or a Lightning .ckpt written by speechprune")
    evaluate.add_argument("manifests", nargs="+", help="JSON-lines manifests to score")
    evaluate.add_argument("--out", required=True, help="folder for the results")
    evaluate.add_argument("--threads", type=int, default=1, help="CPU threads for inference (default: 1)")
    evaluate.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="utterances per forward pass; 1 gives per-utterance latency (default: 1)",
    )
    evaluate.set_defaults(handler=_evaluate)
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
    try:
        return handler(args)
    except SpeechpruneError as error:
        print(f"speechprune {args.command}: error: {user_message(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"speechprune {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
