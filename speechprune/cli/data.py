"""Commands that make corpora and units: ``prepare-fsdd``, ``prepare-librispeech``, ``train-tokenizer``."""

from __future__ import annotations

import argparse
import sys

from speechprune.cli.options import positive_int, tempo_factor, unit_interval


def _prepare_fsdd(args: argparse.Namespace) -> int:
    from asr.data.connected import CompositionConfig
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
        split_rule=SplitRule(
            heldout_speaker=None if args.all_speakers else args.heldout_speaker,
            excluded_speakers=tuple(args.exclude_speakers),
        ),
        composition=CompositionConfig(tight_fraction=args.tight_fraction, join_tempo_max=args.join_tempo),
    )
    manifests = prepare_fsdd_corpus(fsdd_dir, args.out, config)
    for split, path in manifests.items():
        print(f"{split}: {path}")
    return 0


def _synthesize_voices(args: argparse.Namespace) -> int:
    from asr.data.prepare_fsdd import FsddCorpusConfig, prepare_voice_split

    config = FsddCorpusConfig(sample_rate=args.sample_rate, seed=args.seed)
    print(f"train_{args.engine}: {prepare_voice_split(args.out, args.engine, args.count, config)}")
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


def register(commands: argparse._SubParsersAction) -> None:
    prepare = commands.add_parser(
        "prepare-fsdd",
        help="build the connected-digit corpus from FSDD",
        description="Join FSDD isolated digits into connected-digit utterances (real splits that do not "
        "leak, a held-out-speaker test split) plus eSpeak NG synthetic training speech; resumable.",
    )
    prepare.add_argument("--fsdd-dir", help="FSDD folder holding recordings/ (default: ../shared/data/fsdd)")
    prepare.add_argument("--download-to", help="download FSDD here if it is found nowhere else")
    prepare.add_argument("--out", required=True, help="output folder for WAVs and manifests")
    prepare.add_argument(
        "--sample-rate", type=positive_int, default=8000, help="corpus sample rate in Hz (FSDD: 8000)"
    )
    prepare.add_argument("--seed", type=int, default=20240, help="seed of every random draw")
    prepare.add_argument("--train-count", type=positive_int, default=4000, help="real training utterances")
    prepare.add_argument("--valid-count", type=positive_int, default=300, help="validation utterances")
    prepare.add_argument("--test-count", type=positive_int, default=600, help="utterances in each test split")
    prepare.add_argument(
        "--tts-count", type=int, default=2000, help="synthetic training utterances (0: none)"
    )
    held_out = prepare.add_mutually_exclusive_group()
    held_out.add_argument("--heldout-speaker", default="theo", help="FSDD speaker kept out of training")
    held_out.add_argument(
        "--all-speakers",
        action="store_true",
        help="hold no speaker out: every speaker trains (no test_speaker split), for a model to deploy to "
        "voices FSDD does not have rather than one to measure them with",
    )
    prepare.add_argument(
        "--exclude-speakers",
        nargs="+",
        default=[],
        metavar="SPEAKER",
        help="FSDD speakers the corpus leaves out altogether (neither trained nor tested on): with the same "
        "--train-count, a corpus with one training speaker fewer measures what one more speaker is worth "
        "(to leave out theo, hold another speaker out or pass --all-speakers)",
    )
    prepare.add_argument(
        "--tight-fraction",
        type=unit_interval,
        default=0.0,
        help="fraction of training strings joined like fluent speech (words trimmed, short gaps or "
        "cross-faded overlaps) instead of with pauses",
    )
    prepare.add_argument(
        "--join-tempo",
        type=tempo_factor,
        default=1.0,
        help="in tight strings, play each word but the last up to this many times as fast (pitch kept; drawn "
        "per word from [1, JOIN_TEMPO]), as fluent speech shortens words inside a string (default 1: off)",
    )
    prepare.set_defaults(handler=_prepare_fsdd)

    voices = commands.add_parser(
        "synthesize-voices",
        help="connected-digit training strings in synthetic voices (eSpeak NG, MBROLA, Flite)",
        description="Digit strings spoken by an engine's English voices at random rates and pitches, joined "
        "and levelled like the FSDD strings (training only). --engine espeak: eSpeak NG's formant voices "
        "(other draws than prepare-fsdd's train_tts); --engine mbrola: eSpeak NG "
        "through the MBROLA diphone voices us1, us2, us3, en1 (Debian non-free: apt-get install espeak-ng "
        "mbrola mbrola-us1); --engine flite: Flite's kal16, awb, rms and slt (Debian main: apt-get install "
        "flite). Writes OUT/train_ENGINE.jsonl; resumable.",
    )
    voices.add_argument(
        "--engine", required=True, choices=("espeak", "mbrola", "flite"), help="synthesis engine"
    )
    voices.add_argument("--out", required=True, help="output folder for WAVs and the manifest")
    voices.add_argument("--count", type=positive_int, default=1000, help="utterances to synthesize")
    voices.add_argument("--sample-rate", type=positive_int, default=8000, help="output rate in Hz")
    voices.add_argument("--seed", type=int, default=20240, help="seed of every random draw")
    voices.set_defaults(handler=_synthesize_voices)

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
    tokenizer.add_argument(
        "--vocab-size", type=positive_int, help="units incl. blank and <unk> (unigram/bpe)"
    )
    tokenizer.set_defaults(handler=_train_tokenizer)
