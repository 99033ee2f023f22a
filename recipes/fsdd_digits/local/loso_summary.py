"""Summarize a leave-one-speaker-out run: per-speaker greedy WER, the mean and the worst speaker.

Reads ``LOSO_DIR/<speaker>/eval/test_speaker.summary.json`` (written by ``speechprune evaluate``) and
writes ``loso.csv``, ``loso.json``, ``loso.md`` and ``loso.png`` into LOSO_DIR. The mean is over speakers
(each speaker counts once, as a new user does), the pooled WER weights speakers by their words.

    python local/loso_summary.py exp/loso/recipe
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from asr.metrics import never_learned
from common.fileio import atomic_open, write_json


def _rows(loso_dir: Path) -> list[dict]:
    rows = []
    for summary_path in sorted(loso_dir.glob("*/eval/test_speaker.summary.json")):
        summary = json.loads(summary_path.read_text())
        train = json.loads((summary_path.parents[1] / "train_summary.json").read_text())
        rows.append(
            {
                "speaker": summary_path.parents[1].name,
                "utterances": summary["utterances"],
                "words": summary["words"],
                "word_errors": summary["word_errors"],
                "wer": summary["wer"],
                "sentence_error_rate": summary["sentence_error_rate"],
                "epochs": train["epochs_completed"],
                # validation WER >= 100% at the best checkpoint: the fold never left CTC's blank
                # plateau, so its WER measures the training budget, not the speaker
                "blank_plateau": never_learned(train),
                "train_seconds": train["train_seconds_this_run"],
            }
        )
    return rows


def _plot(rows: list[dict], mean: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 3.6))
    axes.bar([row["speaker"] for row in rows], [100 * row["wer"] for row in rows], color="tab:blue")
    axes.axhline(100 * mean, color="tab:red", linestyle="--", label=f"mean {100 * mean:.2f}%")
    axes.set_ylabel("greedy WER on the held-out speaker (%)")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loso_dir", type=Path, help="folder of the run (one sub-folder per held-out speaker)")
    args = parser.parse_args()
    rows = _rows(args.loso_dir)
    if not rows:
        print(f"loso_summary: {args.loso_dir} holds no */eval/test_speaker.summary.json", file=sys.stderr)
        return 2
    mean = sum(row["wer"] for row in rows) / len(rows)
    worst = max(rows, key=lambda row: row["wer"])
    pooled = sum(row["word_errors"] for row in rows) / sum(row["words"] for row in rows)
    with atomic_open(args.loso_dir / "loso.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {"speakers": len(rows), "mean_wer": mean, "pooled_wer": pooled, "worst": worst, "rows": rows}
    write_json(args.loso_dir / "loso.json", summary)
    lines = [
        "| held-out speaker | words | WER | sentence errors | epochs | training s |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['speaker']} | {r['words']} | {100 * r['wer']:.2f}%{' (blank plateau)' * r['blank_plateau']} "
        f"| {100 * r['sentence_error_rate']:.1f}% "
        f"| {r['epochs']} | {r['train_seconds']:.0f} |"
        for r in rows
    ]
    lines.append(f"| **mean over {len(rows)} speakers** | | **{100 * mean:.2f}%** | | | |")
    lines.append(f"| worst ({worst['speaker']}) | | {100 * worst['wer']:.2f}% | | | |")
    with atomic_open(args.loso_dir / "loso.md", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    _plot(rows, mean, args.loso_dir / "loso.png", f"leave-one-speaker-out: {args.loso_dir.name}")
    print("\n".join(lines))
    stuck = [row["speaker"] for row in rows if row["blank_plateau"]]
    if stuck:
        print(
            f"loso_summary: {', '.join(stuck)}: validation WER 100% (CTC's blank plateau); "
            "their WER measures the training budget: train longer to compare levers",
            file=sys.stderr,
        )
    if len(rows) < 6:
        print(f"loso_summary: only {len(rows)} speakers finished", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
