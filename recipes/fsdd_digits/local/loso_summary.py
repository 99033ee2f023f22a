"""Summarize a leave-one-speaker-out run: per-speaker greedy WER, the mean and the worst speaker.

Reads ``LOSO_DIR/<speaker>/eval/test_speaker.summary.json`` (written by ``speechprune evaluate``) and
writes ``loso.csv``, ``loso.json``, ``loso.md`` and ``loso.png`` into LOSO_DIR. The mean is over speakers
(each speaker counts once, as a new user does), the pooled WER weights speakers by their words.

``--against OTHER_DIR`` compares two runs fold by fold (a lever against its control) on the speakers both
have finished, and writes ``against_<OTHER>.{md,json,png}``: a lever is judged on paired folds, since
speakers differ by more (4x here) than levers do.

    python local/loso_summary.py exp/loso/recipe
    python local/loso_summary.py exp/loso/tight_e8 --against exp/loso/control_e8
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
                # by kind (absent from summaries written before evaluate counted them)
                "substitutions": summary.get("substitutions"),
                "deletions": summary.get("deletions"),
                "insertions": summary.get("insertions"),
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


def _kinds(row: dict) -> str:
    if row["substitutions"] is None:
        return "-"
    return f"{row['substitutions']} / {row['deletions']} / {row['insertions']}"


def _plot(runs: dict[str, list[dict]], path: Path, title: str) -> None:
    """Bars per held-out speaker, one colour per run, each run's mean as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 3.6))
    speakers = [row["speaker"] for row in next(iter(runs.values()))]
    width = 0.8 / len(runs)
    for index, (name, rows) in enumerate(runs.items()):
        mean = sum(row["wer"] for row in rows) / len(rows)
        colour = f"C{index}"
        offsets = [i + (index - (len(runs) - 1) / 2) * width for i in range(len(speakers))]
        axes.bar(offsets, [100 * row["wer"] for row in rows], width, color=colour, label=name)
        axes.axhline(100 * mean, color=colour, linestyle="--", label=f"{name} mean {100 * mean:.2f}%")
    axes.set_xticks(range(len(speakers)), speakers)
    axes.set_ylabel("greedy WER on the held-out speaker (%)")
    axes.set_title(title)
    axes.legend(fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def _compare(loso_dir: Path, rows: list[dict], other_dir: Path, other_rows: list[dict]) -> None:
    """The paired comparison: per speaker both runs finished, this run's WER against the other's."""
    mine = {row["speaker"]: row for row in rows}
    theirs = {row["speaker"]: row for row in other_rows}
    common = sorted(mine.keys() & theirs.keys())
    name, other = loso_dir.name, other_dir.name
    pairs = [
        {
            "speaker": speaker,
            f"wer_{other}": theirs[speaker]["wer"],
            f"wer_{name}": mine[speaker]["wer"],
            "change_points": round(100 * (mine[speaker]["wer"] - theirs[speaker]["wer"]), 2),
        }
        for speaker in common
    ]
    mean_mine = sum(mine[s]["wer"] for s in common) / len(common)
    mean_theirs = sum(theirs[s]["wer"] for s in common) / len(common)
    better = sum(pair["change_points"] < 0 for pair in pairs)
    summary = {
        "run": name,
        "against": other,
        "speakers": len(common),
        f"mean_wer_{other}": mean_theirs,
        f"mean_wer_{name}": mean_mine,
        "mean_change_points": round(100 * (mean_mine - mean_theirs), 2),
        "folds_better": better,
        "pairs": pairs,
    }
    write_json(loso_dir / f"against_{other}.json", summary)
    lines = [
        f"| held-out speaker | {other} | {name} | change (points) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {p['speaker']} | {100 * p[f'wer_{other}']:.2f}% | {100 * p[f'wer_{name}']:.2f}% "
        f"| {p['change_points']:+.2f} |"
        for p in pairs
    ]
    lines.append(
        f"| **mean over {len(common)} speakers** | **{100 * mean_theirs:.2f}%** | **{100 * mean_mine:.2f}%** "
        f"| **{summary['mean_change_points']:+.2f}** ({better} of {len(common)} better) |"
    )
    with atomic_open(loso_dir / f"against_{other}.md", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    _plot(
        {other: [theirs[s] for s in common], name: [mine[s] for s in common]},
        loso_dir / f"against_{other}.png",
        f"leave-one-speaker-out: {name} against {other}",
    )
    print("\n".join(lines))


def _against_problem(loso_dir: Path, rows: list[dict], other_dir: Path, other_rows: list[dict]) -> str | None:
    """Why the two runs cannot be compared, checked before anything is written; None when they can."""
    if not other_rows:
        return "holds no */eval/test_speaker.summary.json"
    if other_dir.name == loso_dir.name:
        return f"both runs are named {loso_dir.name}"
    if not {row["speaker"] for row in rows} & {row["speaker"] for row in other_rows}:
        return f"no fold finished in both it and {loso_dir}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loso_dir", type=Path, help="folder of the run (one sub-folder per held-out speaker)")
    parser.add_argument(
        "--against", type=Path, help="another run's folder (its control): compared on the folds both finished"
    )
    args = parser.parse_args()
    rows = _rows(args.loso_dir)
    if not rows:
        print(f"loso_summary: {args.loso_dir} holds no */eval/test_speaker.summary.json", file=sys.stderr)
        return 2
    other_rows = _rows(args.against) if args.against else []
    problem = _against_problem(args.loso_dir, rows, args.against, other_rows) if args.against else None
    if problem:
        print(f"loso_summary: --against {args.against}: {problem}", file=sys.stderr)
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
        "| held-out speaker | words | WER | S / D / I | sentence errors | epochs | training s |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['speaker']} | {r['words']} | {100 * r['wer']:.2f}%{' (blank plateau)' * r['blank_plateau']} "
        f"| {_kinds(r)} | {100 * r['sentence_error_rate']:.1f}% "
        f"| {r['epochs']} | {r['train_seconds']:.0f} |"
        for r in rows
    ]
    lines.append(f"| **mean over {len(rows)} speakers** | | **{100 * mean:.2f}%** | | | | |")
    lines.append(f"| worst ({worst['speaker']}) | | {100 * worst['wer']:.2f}% | | | | |")
    with atomic_open(args.loso_dir / "loso.md", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    title = f"leave-one-speaker-out: {args.loso_dir.name}"
    _plot({args.loso_dir.name: rows}, args.loso_dir / "loso.png", title)
    print("\n".join(lines))
    if args.against:
        _compare(args.loso_dir, rows, args.against, other_rows)
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
