"""How recording conditions move a leave-one-speaker-out run's WER, with and without edge trimming.

FSDD strings are built with at most 0.3 s of near-silence at either end; a user's recording starts when
they press record and stops after they have read. For every scored fold of LOSO_DIR the held-out
speaker's fluent probe (``--split held_out`` for its pause-joined strings) is played under each
condition, in memory, and transcribed greedily by the fold's model as ``speechprune transcribe`` does,
once with the recording whole (``--no-trim``) and once with silence before and after the speech cut
(the default):

- ``as built``: the strings as stage 9 scores them;
- ``silence``: ``--edge-seconds`` of digital silence before and after;
- ``room noise``: white noise over the whole recording, ``--snr-db`` below the speech;
- ``silence + room noise``: both, the noise over the added silence too (the closest to a real recording).

Arguments are runs (every scored fold in them) or single folds. Each fold's rows are kept in its
``eval/conditions_SPLIT_EDGEs_SNRdB.json``, so a rerun (or a run over folds that several processes
scored side by side) reads them instead of transcribing again. Writes ``--out``/conditions.{csv,json,md,png}:
WER per fold, condition and trimming, and the means over the folds.

    python local/loso_recording_conditions.py exp/loso/sorta1_t44_s3/george exp/loso/sorta1_t44_s3/jackson \
        exp/loso/sorta1_t44_s3_rebuilt --out results/loso/conditions_s3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from asr import speech_span
from asr.inference import load_evaluation_audio
from asr.metrics import error_counts
from asr.transcriber import Transcriber
from common.fileio import atomic_open, write_csv, write_json

SPLITS = {"probe": "test_speaker_tight.summary.json", "held_out": "test_speaker.summary.json"}
BATCH = 16


def conditions(edge_seconds: float, snr_db: float, sample_rate: int) -> dict[str, Callable]:
    """Name -> (waveform, seed) -> the waveform as recorded under that condition (deterministic)."""

    def silence(waveform: np.ndarray, seed: int) -> np.ndarray:
        edge = np.zeros(round(edge_seconds * sample_rate), np.float32)
        return np.concatenate([edge, waveform, edge])

    def room(waveform: np.ndarray, seed: int, speech: np.ndarray | None = None) -> np.ndarray:
        level = float(np.sqrt(np.mean((waveform if speech is None else speech) ** 2)))
        noise = np.random.default_rng(seed).standard_normal(len(waveform)).astype(np.float32)
        return waveform + noise * np.float32(level / 10 ** (snr_db / 20))

    return {
        "as built": lambda w, seed: w,
        f"silence {edge_seconds:g} s": silence,
        f"room noise {snr_db:g} dB": room,
        "silence + room noise": lambda w, seed: room(silence(w, seed), seed, speech=w),
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fold_wer(
    fold: Path, model: str, split: str, edge_seconds: float, snr_db: float, limit: int | None
) -> list[dict]:
    """One row per condition and trimming: the greedy WER of the fold's ``model`` (its path in the fold)
    on its held-out speaker, kept in the fold's eval folder and read from there when the same
    measurement was made before."""
    tag = "" if model == "model.pt" else "_" + "_".join(Path(model).with_suffix("").parts)
    cache = fold / "eval" / f"conditions{tag}_{split}_{edge_seconds:g}s_{snr_db:g}dB.json"
    manifest = json.loads((fold / "eval" / SPLITS[split]).read_text())["manifest"]
    # what the rows depend on: a retrained fold, an edited manifest or other cut settings measure anew
    settings = {
        "model": str((fold / model).resolve()),
        "model_sha256": _sha256(fold / model),
        "manifest": manifest,
        "manifest_sha256": _sha256(Path(manifest)),
        "limit": limit,
        "cut": {
            "below_peak_db": speech_span.BELOW_PEAK_DB,
            "above_floor_db": speech_span.ABOVE_FLOOR_DB,
            "speech_range_db": speech_span.SPEECH_RANGE_DB,
            "margin_seconds": speech_span.MARGIN_SECONDS,
        },
    }
    if cache.is_file():
        kept = json.loads(cache.read_text())
        if kept["settings"] == settings:
            print(f"{fold.name}: measured before ({cache})")
            return kept["rows"]
    rows = []
    for trim in (False, True):
        transcriber = Transcriber(fold / model, threads=1, trim_edges=trim)
        audio = load_evaluation_audio(manifest, transcriber.sample_rate, limit)
        for name, condition in conditions(edge_seconds, snr_db, transcriber.sample_rate).items():
            recorded = [condition(w.numpy(), seed) for seed, w in enumerate(audio.waveforms)]
            hypotheses = [
                t.text
                for start in range(0, len(recorded), BATCH)
                for t in transcriber.transcribe(recorded[start : start + BATCH])
            ]
            counts = error_counts(audio.references, hypotheses)
            rows.append(
                {
                    "speaker": fold.name,
                    "condition": name,
                    "trimmed": trim,
                    "wer": round(100 * counts.wer, 2),
                    "substitutions": counts.substitutions,
                    "deletions": counts.deletions,
                    "insertions": counts.insertions,
                    "words": counts.words,
                }
            )
            print(f"{fold.name:10s} {name:24s} {'trimmed' if trim else 'whole  '} {rows[-1]['wer']:6.2f}%")
    write_json(cache, {"settings": settings, "rows": rows})
    return rows


def summary(rows: list[dict], names: list[str]) -> list[dict]:
    """Per condition: mean WER over the folds whole and trimmed, and the worst fold of each."""
    result = []
    for name in names:
        entry: dict = {"condition": name}
        for trimmed, label in ((False, "whole"), (True, "trimmed")):
            chosen = [r for r in rows if r["condition"] == name and r["trimmed"] == trimmed]
            worst = max(chosen, key=lambda r: r["wer"])
            entry[f"mean_wer_{label}"] = round(statistics.mean(r["wer"] for r in chosen), 2)
            entry[f"worst_{label}"] = f"{worst['speaker']} {worst['wer']:.2f}%"
        result.append(entry)
    return result


def markdown(rows: list[dict], table: list[dict], names: list[str], args: argparse.Namespace) -> str:
    speakers = sorted({r["speaker"] for r in rows})
    wer = {(r["speaker"], r["condition"], r["trimmed"]): r["wer"] for r in rows}
    lines = [
        f"# Recording conditions: greedy WER on the held-out speaker ({args.split}), whole / trimmed",
        "",
        "| speaker | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for speaker in speakers:
        cells = [f"{wer[speaker, n, False]:.2f}% / {wer[speaker, n, True]:.2f}%" for n in names]
        lines.append(f"| {speaker} | " + " | ".join(cells) + " |")
    cells = [f"**{e['mean_wer_whole']:.2f}% / {e['mean_wer_trimmed']:.2f}%**" for e in table]
    lines.append("| mean | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Folds: {', '.join(str(d) for d in args.loso_dirs)}; model {args.model}; "
        f"{args.limit or 'all'} strings a fold.",
    ]
    return "\n".join(lines) + "\n"


def plot(table: list[dict], path: Path, split: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(table))
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for offset, label in ((-0.2, "whole"), (0.2, "trimmed")):
        values = [e[f"mean_wer_{label}"] for e in table]
        bars = axes.bar(x + offset, values, width=0.4, label=f"recording {label}")
        axes.bar_label(bars, fmt="%.1f", fontsize=8)
    axes.set_xticks(x, [e["condition"] for e in table])
    axes.set_ylabel("greedy WER, mean over folds (%)")
    axes.set_title(f"Held-out speaker ({split}) under recording conditions")
    axes.legend()
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "loso_dirs", type=Path, nargs="+", help="leave-one-speaker-out runs (exp/loso/NAME) or folds of them"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for conditions.*")
    parser.add_argument("--split", choices=sorted(SPLITS), default="probe", help="default: probe")
    parser.add_argument("--edge-seconds", type=float, default=1.5, help="silence either side (default: 1.5)")
    parser.add_argument(
        "--snr-db", type=float, default=30.0, help="room noise below the speech (default: 30)"
    )
    parser.add_argument(
        "--model",
        default="model.pt",
        help="the model of each fold, by its path inside the fold (a pruned snapshot: "
        "prune/RUN/snapshots/sparsity50.pt; default: model.pt)",
    )
    parser.add_argument("--limit", type=int, help="strings a fold, spread over its manifest (default: all)")
    args = parser.parse_args()
    if Path(args.model).is_absolute() or ".." in Path(args.model).parts:
        print(f"loso_recording_conditions.py: --model {args.model}: a path inside each fold", file=sys.stderr)
        return 2
    if args.edge_seconds <= 0 or (args.limit is not None and args.limit < 1):
        print("loso_recording_conditions.py: --edge-seconds and --limit must be positive", file=sys.stderr)
        return 2
    summary_name = SPLITS[args.split]
    folds = sorted(
        (
            path.parents[1]
            for given in args.loso_dirs
            for path in (
                [given / "eval" / summary_name]
                if (given / "eval").is_dir()
                else given.glob(f"*/eval/{summary_name}")
            )
            if path.is_file() and (path.parents[1] / args.model).is_file()
        ),
        key=lambda fold: fold.name,
    )
    if not folds:
        print(f"loso_recording_conditions.py: no scored fold in {args.loso_dirs}", file=sys.stderr)
        return 2
    names = [fold.name for fold in folds]
    if len(set(names)) < len(names):
        print(
            f"loso_recording_conditions.py: a speaker comes twice: {names}; name its folds", file=sys.stderr
        )
        return 2
    torch.set_num_threads(1)
    rows = [
        row
        for fold in folds
        for row in fold_wer(fold, args.model, args.split, args.edge_seconds, args.snr_db, args.limit)
    ]
    names = list(dict.fromkeys(r["condition"] for r in rows))
    table = summary(rows, names)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "conditions.csv", rows)
    write_json(
        out / "conditions.json",
        {
            "folds": [str(f) for f in folds],
            "split": args.split,
            "edge_seconds": args.edge_seconds,
            "snr_db": args.snr_db,
            "limit": args.limit,
            "means": table,
            "rows": rows,
        },
    )
    with atomic_open(out / "conditions.md", "w") as handle:
        handle.write(markdown(rows, table, names, args))
    plot(table, out / "conditions.png", args.split)
    for entry in table:
        whole, trimmed = entry["mean_wer_whole"], entry["mean_wer_trimmed"]
        print(f"{entry['condition']:24s} whole {whole:6.2f}%  trimmed {trimmed:6.2f}%")
    print(f"-> {out}/conditions.{{csv,json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
