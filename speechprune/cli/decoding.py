"""Commands around decoding: ``transcribe``, ``build-lm``, ``build-lexicon``, ``tune-decoder``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asr.transcribe import CHUNK_SECONDS
from decoding.backends import DecoderSettings
from speechprune.cli.options import (
    add_decoder_options,
    add_no_trim_option,
    decoder_settings,
    output_dir,
    output_file,
    positive_float,
    positive_int,
)


def _transcribe(args: argparse.Namespace) -> int:
    import contextlib
    import csv
    import json

    from tqdm import tqdm

    from asr.transcribe import BadFile, FileTranscriber, expand_inputs
    from common.errors import SpeechpruneError
    from common.fileio import atomic_open

    settings = decoder_settings(args)
    paths = expand_inputs(args.inputs)
    if args.self_adapt is not None and Path(args.model).is_dir():
        raise SpeechpruneError(
            f"--self-adapt: {args.model} is an export folder; adapt the model file it was exported from"
        )

    def transcriber_of(model: str | Path) -> FileTranscriber:
        return FileTranscriber(
            model,
            args.decoder,
            settings,
            threads=args.threads,
            chunk_seconds=args.chunk_seconds,
            precision=args.precision,
            trim_edges=not args.no_trim,
        )

    transcriber = transcriber_of(args.model)  # model and decoder settings checked before any work
    if args.self_adapt is not None:
        from asr.augment import AugmentConfig
        from asr.self_adaptation import SelfAdaptationConfig, self_adapt_model_file

        report = self_adapt_model_file(
            args.model,
            paths,
            args.self_adapt,
            AugmentConfig(),
            SelfAdaptationConfig(trim_edges=not args.no_trim),
            progress=True,
        )
        print(
            f"speechprune transcribe: {args.self_adapt}: adapted to these recordings (fine-tuned on "
            f"{report.kept} of the model's {report.recordings - report.too_long} transcripts)",
            file=sys.stderr,
        )
        transcriber = transcriber_of(args.self_adapt)
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


def _export(args: argparse.Namespace) -> int:
    from asr.export import export_model

    manifest = export_model(args.model, args.out, int8=args.int8)
    print(f"{args.model} -> {manifest.parent} (encoder.onnx{', encoder.int8.onnx' if args.int8 else ''})")
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


def _build_lexicon(args: argparse.Namespace) -> int:
    from asr.checkpoint import load_model
    from asr.data.manifest import read_manifest
    from common.errors import SpeechpruneError
    from decoding.backends import write_lexicon

    words = sorted(
        {w for manifest in args.manifests for u in read_manifest(manifest) for w in u.text.split()}
    )
    if not words:
        raise SpeechpruneError("the manifests hold no words for a lexicon")
    aliases: dict[str, list[str]] = {}
    for item in args.alias:
        word, _, spoken = item.partition("=")
        if not word or not spoken:
            raise SpeechpruneError(f"--alias {item!r}: use WORD=SPOKEN (e.g. zero=oh)")
        aliases.setdefault(word, []).append(spoken)
    write_lexicon(args.out, words, load_model(args.model).tokenizer, aliases)
    extra = sum(map(len, aliases.values()))
    print(f"{args.out}: {len(words)} words, {extra} alias spelling(s), in the pieces of {args.model}")
    return 0


def _tune_decoder(args: argparse.Namespace) -> int:
    from common.fileio import write_json
    from speechprune.study.tuning import tune_decoders

    tuned = tune_decoders(args.model, args.manifest, beam_width=args.beam_width, limit=args.limit)
    write_json(args.out, tuned)
    for backend, settings in tuned["chosen"].items():
        print(f"{backend}: {settings}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    transcribe = commands.add_parser(
        "transcribe",
        help="transcribe audio files, folders or glob patterns with a model",
        description="Reads WAV/FLAC/OGG (any sample rate, stereo mixed down), encodes in batches and "
        "decodes each file; unreadable files are reported and skipped (exit status 1).",
    )
    transcribe.add_argument(
        "model", help="model.pt, a speechprune .ckpt (pruned or not) or an export folder (speechprune export)"
    )
    transcribe.add_argument("inputs", nargs="+", help="audio files, folders (searched recursively) or globs")
    transcribe.add_argument(
        "--format", choices=("text", "jsonl", "csv"), default="text", help="output format (default: text)"
    )
    transcribe.add_argument("--out", type=output_file, help="write here instead of standard output")
    add_decoder_options(transcribe)
    transcribe.add_argument(
        "--batch-size", type=positive_int, default=8, help="files per forward pass (default: 8)"
    )
    transcribe.add_argument("--threads", type=positive_int, default=1, help="CPU threads (default: 1)")
    transcribe.add_argument(
        "--precision",
        choices=("float32", "int8"),
        default="float32",
        help="with an export folder: its float32 or int8 ONNX encoder (default: float32)",
    )
    transcribe.add_argument(
        "--chunk-seconds",
        type=positive_float,
        default=CHUNK_SECONDS,
        help=f"files longer than twice this are encoded this many seconds at a time, in bounded memory "
        f"(default: {CHUNK_SECONDS:g})",
    )
    add_no_trim_option(transcribe)
    transcribe.add_argument(
        "--self-adapt",
        type=output_file,
        metavar="ADAPTED",
        help="first adapt MODEL to the speaker of the inputs, without transcripts (speechprune self-adapt "
        "with its defaults; 20 or more recordings of one speaker), write it to ADAPTED, and transcribe "
        "with it",
    )
    transcribe.set_defaults(handler=_transcribe)

    lm = commands.add_parser(
        "build-lm",
        help="n-gram LM (ARPA, modified Kneser-Ney) from manifest transcripts",
        description="Uses KenLM's lmplz when on PATH, else speechprune's own builder; kenlm and "
        "flashlight load the result.",
    )
    lm.add_argument("manifests", nargs="+", help="manifests whose transcripts train the LM")
    lm.add_argument("--out", type=output_file, required=True, help="ARPA file to write")
    lm.add_argument("--order", type=positive_int, default=3, help="n-gram order (default: 3)")
    lm.add_argument("--unit", choices=("word", "piece"), default="word", help="LM units (default: word)")
    lm.add_argument("--model", help="model whose tokenizer splits pieces (--unit piece)")
    lm.add_argument("--tokenizer", help="or the SentencePiece .model file itself (--unit piece)")
    lm.set_defaults(handler=_build_lm)

    lexicon = commands.add_parser(
        "build-lexicon",
        help="flashlight lexicon of the manifests' words, spelled in a model's pieces",
        description="Writes word TAB pieces lines for --lexicon (flashlight's lexicon decoder then only "
        "decodes these words); --alias zero=oh adds 'oh' as a second spelling of 'zero'.",
    )
    lexicon.add_argument("manifests", nargs="+", type=Path, help="manifests whose transcripts give the words")
    lexicon.add_argument("--model", type=Path, required=True, help="the model whose pieces spell the words")
    lexicon.add_argument(
        "--alias", action="append", default=[], metavar="WORD=SPOKEN", help="another spoken form"
    )
    lexicon.add_argument("--out", type=output_file, required=True, help="lexicon file to write")
    lexicon.set_defaults(handler=_build_lexicon)

    tune = commands.add_parser(
        "tune-decoder",
        help="tightest beam-search settings with no WER cost on a validation set",
        description="Decodes MANIFEST with a grid of beam thresholds and probability cutoffs and keeps, per "
        "backend (own, flashlight), the smallest search whose WER equals the widest search's.",
    )
    tune.add_argument("model", help="the unpruned model (settings are then fixed for all pruned models)")
    tune.add_argument("manifest", help="validation manifest")
    tune.add_argument(
        "--out", type=output_file, required=True, help="JSON file for the chosen settings and trials"
    )
    tune.add_argument(
        "--beam-width",
        type=positive_int,
        default=DecoderSettings.beam_width,
        help="beam width of both decoders (default: %(default)s)",
    )
    tune.add_argument("--limit", type=positive_int, default=300, help="utterances to decode (default: 300)")
    tune.set_defaults(handler=_tune_decoder)

    export = commands.add_parser(
        "export",
        help="export a (pruned) model for a device: ONNX encoder, numpy front end, units",
        description="Writes OUT/encoder.onnx (dynamic time axis), with --int8 also encoder.int8.onnx "
        "(onnxruntime dynamic quantization), mel_filterbank.npy and export.json (feature settings, units, "
        "SHA-256 of every file). `speechprune transcribe OUT ...` runs it with onnxruntime.",
    )
    export.add_argument("model", help="model.pt to export")
    export.add_argument("--out", type=output_dir, required=True, help="export folder")
    export.add_argument(
        "--int8", action="store_true", help="also write the int8 dynamically quantized encoder"
    )
    export.set_defaults(handler=_export)
