"""The ``speechprune`` command: corpus preparation, tokenizer, training and evaluation.

Errors that are the user's to fix (bad files, bad options) print one line naming the culprit and exit
with status 2; a batch job that skipped unreadable files exits with status 1 after writing its results.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

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


def _prepare_librispeech(args: argparse.Namespace) -> int:
    from asr.data.librispeech import download_subset, prepare_subset

    status = 0
    for subset in args.subsets:
        if args.download:
            download_subset(args.root, subset)
        prepared = prepare_subset(args.root, subset, args.out)
        print(f"{subset}: {prepared.utterances} utterances, {prepared.hours:.2f} h -> {prepared.manifest}")
        for problem in prepared.skipped:
            print(f"  skipped {problem}", file=sys.stderr)
        status = 1 if prepared.skipped else status
    return status


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


def _prune(args: argparse.Namespace) -> int:
    from asr.config import load_config
    from pruning.job import prune

    config = load_config(args.config, args.set)
    snapshots = prune(config, args.model, args.exp_dir)
    print(f"pruned models: {snapshots}")
    return 0


def _build_lm(args: argparse.Namespace) -> int:
    from asr.checkpoint import load_model
    from asr.data.manifest import read_manifest
    from asr.tokenizer import Tokenizer
    from decoding.arpa import build_arpa

    tokenizer = Tokenizer.load(args.tokenizer) if args.tokenizer else None
    if args.model:
        tokenizer = load_model(args.model).tokenizer
    texts = [u.text for manifest in args.manifests for u in read_manifest(manifest)]
    summary = build_arpa(texts, args.order, args.out, unit=args.unit, tokenizer=tokenizer)
    print(
        f"{args.out}: {summary.order}-gram {args.unit} LM ({summary.backend}), n-grams {summary.ngram_counts}"
    )
    return 0


def _tune_decoder(args: argparse.Namespace) -> int:
    from asr.fileio import write_json
    from pruning.study import tune_decoders

    tuned = tune_decoders(args.model, args.manifest, beam_width=args.beam_width, limit=args.limit)
    write_json(args.out, tuned)
    for backend, settings in tuned["chosen"].items():
        print(f"{backend}: {settings}")
    return 0


def _study(args: argparse.Namespace) -> int:
    import json

    from asr.fileio import write_csv, write_json
    from pruning.plots import write_report
    from pruning.study import collect_models, decoder_specs, run_study

    if not args.decoders.is_file():
        raise SpeechpruneError(f"{args.decoders}: no such decoder settings file (run tune-decoder first)")
    tuned = json.loads(args.decoders.read_text())["chosen"]
    if args.wide_threshold == 0:
        args.wide_threshold = None
    specs = decoder_specs(tuned, args.lm, args.alpha, args.beta, args.wide_threshold)
    models = collect_models(args.baseline, args.runs)
    rows = run_study(
        models,
        args.manifest,
        specs,
        decode_limit=args.limit,
        repeats=args.repeats,
        threads=args.threads,
        greedy_manifests=args.greedy_manifest,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", rows)
    write_csv(args.out / "results.csv", rows)
    for path in write_report(rows, args.out):
        print(path)
    return 0


def _report(args: argparse.Namespace) -> int:
    import json

    from pruning.plots import write_report

    results = args.run_dir / "results.json"
    if not results.is_file():
        raise SpeechpruneError(f"{results}: no study results here (run 'speechprune study' first)")
    for path in write_report(json.loads(results.read_text()), args.run_dir):
        print(path)
    return 0


def _transcribe(args: argparse.Namespace) -> int:
    import contextlib
    import csv
    import json

    from tqdm import tqdm

    from asr.fileio import atomic_open
    from asr.inference import GREEDY
    from asr.transcribe import BadFile, FileTranscriber, expand_inputs
    from decoding.backends import DecoderSettings

    paths = expand_inputs(args.inputs)
    settings = None
    if args.decoder != GREEDY:
        settings = DecoderSettings(
            beam_width=args.beam_width,
            cutoff_top_n=args.cutoff_top_n,
            cutoff_prob=args.cutoff_prob,
            beam_threshold=args.beam_threshold,
            blank_skip_threshold=args.blank_skip_threshold,
            alpha=args.alpha,
            beta=args.beta,
            lm_path=args.lm,
            lm_unit=args.lm_unit,
        )
    transcriber = FileTranscriber(args.model, args.decoder, settings, threads=args.threads)
    bad: list[BadFile] = []
    opener = atomic_open(args.out, "w", newline="") if args.out else contextlib.nullcontext(sys.stdout)
    with opener as handle:
        writer = None
        if args.format == "csv":
            fields = ["path", "text", "score", "duration_s", "encoder_ms", "decoder_ms", "words"]
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
        progress = tqdm(
            total=len(paths), desc="transcribe", unit="file", disable=len(paths) < 2, file=sys.stderr
        )
        for result in transcriber.transcribe(paths, batch_size=args.batch_size):
            progress.update(1)
            if isinstance(result, BadFile):
                bad.append(result)
                continue
            row = result.to_row()
            if args.format == "jsonl":
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            elif writer is not None:
                writer.writerow(
                    {**row, "words": " ".join(f"{w['word']}@{w['start']}-{w['end']}" for w in row["words"])}
                )
            else:
                handle.write(
                    f"{row['path']}\t{row['text']}\t(encoder {row['encoder_ms']:.1f} ms, "
                    f"decoder {row['decoder_ms']:.2f} ms)\n"
                )
            handle.flush()
        progress.close()
    for problem in bad:
        print(f"speechprune transcribe: skipped {problem.reason}", file=sys.stderr)
    if bad:
        print(f"speechprune transcribe: {len(bad)} of {len(paths)} files could not be read", file=sys.stderr)
    return 1 if bad else 0


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


def _add_config_options(
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

    libri = commands.add_parser(
        "prepare-librispeech",
        help="manifests from LibriSpeech in its standard layout",
        description="Reads ROOT/SUBSET/SPEAKER/CHAPTER/*.trans.txt and the FLACs beside them; writes "
        "OUT/SUBSET.jsonl. Downloads from openslr only with --download. Utterances whose audio is missing or "
        "unreadable are reported and left out (exit status 1).",
    )
    libri.add_argument("--root", required=True, help="folder holding the subset folders (e.g. LibriSpeech/)")
    libri.add_argument(
        "--subsets", nargs="+", required=True, help="e.g. train-clean-100 dev-clean test-clean"
    )
    libri.add_argument("--out", required=True, help="folder for the manifests")
    libri.add_argument("--download", action="store_true", help="download missing subsets from openslr first")
    libri.set_defaults(handler=_prepare_librispeech)

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
    _add_config_options(
        train,
        "data, tokenizer, features, model, augment, optim, trainer",
        "folder for checkpoints, logs and the exported model",
        "trainer.max_epochs=3",
    )
    train.set_defaults(handler=_train)

    prune = commands.add_parser(
        "prune",
        help="structured pruning + fine-tuning of a trained model",
        description="Prune LSTM units (and conv channels) of MODEL physically, fine-tuning with Lightning "
        "between pruning events; writes EXP_DIR/snapshots/sparsityNN.pt at every requested sparsity. "
        "Resumes from EXP_DIR/checkpoints/last.ckpt when rerun.",
    )
    prune.add_argument("model", help="the trained model.pt (or speechprune .ckpt) to prune")
    _add_config_options(
        prune,
        "data, augment, optim, trainer, prune, vib, regularizer",
        "folder for checkpoints, logs and snapshots",
        "regularizer.weight=1.0",
    )
    prune.set_defaults(handler=_prune)

    transcribe = commands.add_parser(
        "transcribe",
        help="transcribe audio files, folders or glob patterns with a model",
        description="Reads WAV/FLAC/OGG (any sample rate, stereo mixed down), encodes in batches and "
        "decodes each file; unreadable files are reported and skipped (exit status 1).",
    )
    transcribe.add_argument("model", help="model.pt or speechprune .ckpt (pruned or not)")
    transcribe.add_argument("inputs", nargs="+", help="audio files, folders (searched recursively) or globs")
    transcribe.add_argument(
        "--format", choices=("text", "jsonl", "csv"), default="text", help="output format (default: text)"
    )
    transcribe.add_argument("--out", type=Path, help="write here instead of standard output")
    transcribe.add_argument(
        "--decoder",
        choices=("greedy", "own", "flashlight", "pyctcdecode", "ctcdecode"),
        default="greedy",
        help="greedy, or a beam-search backend (own reports search statistics; default: greedy)",
    )
    transcribe.add_argument("--beam-width", type=int, default=16, help="beam width (default: 16)")
    transcribe.add_argument("--cutoff-top-n", type=int, default=40, help="tokens tried per frame (ctcdecode)")
    transcribe.add_argument("--cutoff-prob", type=float, default=1.0, help="cumulative probability cutoff")
    transcribe.add_argument("--beam-threshold", type=float, help="drop hypotheses below best - this")
    transcribe.add_argument(
        "--blank-skip-threshold", type=float, help="skip frames whose blank prob exceeds this"
    )
    transcribe.add_argument("--lm", type=Path, help="KenLM model (ARPA or binary) for shallow fusion")
    transcribe.add_argument("--lm-unit", choices=("word", "piece"), default="word", help="units of --lm")
    transcribe.add_argument("--alpha", type=float, default=0.0, help="LM weight")
    transcribe.add_argument(
        "--beta", type=float, default=0.0, help="bonus per word (per piece for piece LMs)"
    )
    transcribe.add_argument("--batch-size", type=int, default=8, help="files per forward pass (default: 8)")
    transcribe.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    transcribe.set_defaults(handler=_transcribe)

    lm = commands.add_parser(
        "build-lm",
        help="n-gram LM (ARPA, modified Kneser-Ney) from manifest transcripts",
        description="Uses KenLM's lmplz when on PATH, else speechprune's own builder; kenlm and "
        "flashlight load the result.",
    )
    lm.add_argument("manifests", nargs="+", help="manifests whose transcripts train the LM")
    lm.add_argument("--out", required=True, help="ARPA file to write")
    lm.add_argument("--order", type=int, default=3, help="n-gram order (default: 3)")
    lm.add_argument("--unit", choices=("word", "piece"), default="word", help="LM units (default: word)")
    lm.add_argument("--model", help="model whose tokenizer splits pieces (--unit piece)")
    lm.add_argument("--tokenizer", help="or the SentencePiece .model file itself (--unit piece)")
    lm.set_defaults(handler=_build_lm)

    tune = commands.add_parser(
        "tune-decoder",
        help="tightest beam-search settings with no WER cost on a validation set",
        description="Decodes MANIFEST with a grid of beam thresholds and probability cutoffs and keeps, per "
        "backend (own, flashlight), the smallest search whose WER equals the widest search's.",
    )
    tune.add_argument("model", help="the unpruned model (settings are then fixed for all pruned models)")
    tune.add_argument("manifest", help="validation manifest")
    tune.add_argument("--out", type=Path, required=True, help="JSON file for the chosen settings and trials")
    tune.add_argument("--beam-width", type=int, default=16, help="beam width of both decoders (default: 16)")
    tune.add_argument("--limit", type=int, default=300, help="utterances to decode (default: 300)")
    tune.set_defaults(handler=_tune_decoder)

    study = commands.add_parser(
        "study",
        help="WER, search size and encoder/decoder/end-to-end latency of pruned models",
        description="Measures the unpruned model and every snapshot of the given pruning runs with every "
        "decoder configuration; writes results.csv/json, PNG plots and summary.md to --out.",
    )
    study.add_argument("--baseline", type=Path, required=True, help="the unpruned model.pt")
    study.add_argument(
        "--runs", type=Path, nargs="+", required=True, help="pruning run folders (EXP_DIR of prune)"
    )
    study.add_argument("--manifest", type=Path, required=True, help="test manifest (decoded and timed)")
    study.add_argument(
        "--greedy-manifest", type=Path, nargs="*", default=[], help="more manifests scored with greedy WER"
    )
    study.add_argument("--decoders", type=Path, required=True, help="settings from tune-decoder")
    study.add_argument("--lm", type=Path, help="piece-level ARPA LM for the +lm decoder configurations")
    study.add_argument("--alpha", type=float, default=0.5, help="LM weight (default: 0.5)")
    study.add_argument("--beta", type=float, default=0.0, help="own decoder's bonus per piece (default: 0)")
    study.add_argument(
        "--limit", type=int, default=300, help="utterances decoded and timed per model (default: 300)"
    )
    study.add_argument("--repeats", type=int, default=3, help="timed runs per utterance (default: 3)")
    study.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="encoder thread counts")
    study.add_argument(
        "--wide-threshold",
        type=float,
        default=10.0,
        help="beam threshold of the extra '-wide' decoder configurations (default: 10; 0 = none)",
    )
    study.add_argument("--out", type=Path, required=True, help="output folder")
    study.set_defaults(handler=_study)

    report = commands.add_parser(
        "report",
        help="plots and a Markdown table from a study's results",
        description="Reads RUN_DIR/results.json and (re)writes the PNG plots and summary.md next to it.",
    )
    report.add_argument("run_dir", type=Path, help="the study's --out folder")
    report.set_defaults(handler=_report)

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
