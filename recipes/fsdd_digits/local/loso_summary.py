"""Summarize a leave-one-speaker-out run: per-speaker greedy WER, the mean and the worst speaker.

Reads ``LOSO_DIR/<speaker>/eval/test_speaker.summary.json`` (written by ``speechprune evaluate``) and, where
the fold was scored on it, ``test_speaker_tight.summary.json`` (the fluent probe: the same speaker's
recordings, every join tight), and writes ``loso.csv``, ``loso.json``, ``loso.md`` and ``loso.png`` into
LOSO_DIR. The mean is over speakers (each speaker counts once, as a new user does), the pooled WER weights
speakers by their words.

``--against OTHER_DIR`` compares two runs fold by fold (a lever against its control) on the speakers both
have finished, and writes ``against_<OTHER>.{md,json,png}``: a lever is judged on paired folds, since
speakers differ by more (4x here) than levers do.

    python local/loso_summary.py exp/loso/recipe
    python local/loso_summary.py exp/loso/tight_e8 --against exp/loso/control_e8
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from asr.metrics import blank_plateau
from common.fileio import atomic_open, write_json

PROBE = "test_speaker_tight.summary.json"
# the two measures of a fold: row key, prefix of its other figures, what it is
MEASURES = (("wer", "", "pause-joined strings"), ("probe_wer", "probe_", "fluent probe (tight joins)"))
# validation WER under which a training has left CTC's blank plateau: it falls from ~90% to ~30% within one
# epoch when it leaves, so where between the two the line sits barely matters
LEFT_PLATEAU_BELOW = 0.5


def _probe(eval_dir: Path) -> dict:
    """The fold's fluent-probe figures, None where it was not scored on the probe."""
    path = eval_dir / PROBE
    summary = json.loads(path.read_text()) if path.is_file() else {}
    keys = ("wer", "substitutions", "deletions", "insertions", "audio_sha256")
    return {f"probe_{key}": summary.get(key) for key in keys}


def _validation_wers(fold_dir: Path) -> dict[int, float]:
    """The fold's validation WER by epoch, from its Lightning CSV logs: every ``version_N`` in order, since a
    resumed fit logs into the next one and its epochs replace the interrupted ones'."""
    by_epoch: dict[int, float] = {}
    versions = sorted(
        fold_dir.glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.removeprefix("version_"))
    )
    for metrics in versions:
        with metrics.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("val_wer")]
        by_epoch |= {int(row["epoch"]): float(row["val_wer"]) for row in rows}
    return dict(sorted(by_epoch.items()))


def _plateau_epochs(fold_dir: Path) -> int | None:
    """Epochs the training spent on CTC's blank plateau, those before its validation WER first fell below
    ``LEFT_PLATEAU_BELOW`` (all of them where it never did): where seeds part, so a fold's WER is read beside
    it. None without logs."""
    wers = _validation_wers(fold_dir)
    if not wers:
        return None
    return next((epoch for epoch, wer in wers.items() if wer < LEFT_PLATEAU_BELOW), max(wers) + 1)


def fold_rows(loso_dir: Path) -> list[dict]:
    """One row per fold the run finished: its figures on both measures, epochs, fingerprints (read by
    ``loso_seeds.py`` too)."""
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
                "audio_sha256": summary.get("audio_sha256"),  # absent from summaries before fingerprints
                "epochs": train["epochs_completed"],
                # still on CTC's blank plateau (asr.metrics.blank_plateau): the fold's WER measures
                # the training budget, not the speaker
                "blank_plateau": blank_plateau(train) is not None,
                "train_seconds": train["train_seconds_this_run"],
                "plateau_epochs": _plateau_epochs(summary_path.parents[1]),
                **_probe(summary_path.parent),
            }
        )
    return rows


def _kinds(row: dict, prefix: str = "") -> str:
    if row[f"{prefix}substitutions"] is None:
        return "-"
    return f"{row[f'{prefix}substitutions']} / {row[f'{prefix}deletions']} / {row[f'{prefix}insertions']}"


def _probe_cell(row: dict) -> str:
    if row["probe_wer"] is None:
        return "-"
    return f"{100 * row['probe_wer']:.2f}% ({_kinds(row, 'probe_')})"


def mean_over_folds(rows: list[dict], key: str) -> float | None:
    """Mean over speakers of a measure, None unless every fold has it (a partial mean misleads); read by
    ``loso_pruning.py`` too."""
    values = [row[key] for row in rows]
    return None if any(v is None for v in values) else sum(values) / len(values)


def _plot(runs: dict[str, list[dict]], path: Path, title: str) -> None:
    """Bars per held-out speaker, one colour per run, each run's mean as a dashed line; a second panel for
    the fluent probe when every fold of every run has it."""
    import matplotlib.pyplot as plt

    from speechprune.figures import save_png

    measures = [
        (key, label)
        for key, _, label in MEASURES
        if all(mean_over_folds(r, key) is not None for r in runs.values())
    ]
    figure, panels = plt.subplots(1, len(measures), figsize=(6.4 * len(measures), 3.8), squeeze=False)
    speakers = [row["speaker"] for row in next(iter(runs.values()))]
    width = 0.8 / len(runs)
    for axes, (key, label) in zip(panels[0], measures, strict=True):
        highest = max(1.0, *(100 * row[key] for rows in runs.values() for row in rows))  # all-zero runs too
        for index, (name, rows) in enumerate(runs.items()):
            mean = mean_over_folds(rows, key)
            colour = f"C{index}"
            offsets = [i + (index - (len(runs) - 1) / 2) * width for i in range(len(speakers))]
            axes.bar(offsets, [100 * row[key] for row in rows], width, color=colour, label=name)
            axes.axhline(100 * mean, color=colour, linestyle="--", label=f"{name} mean {100 * mean:.2f}%")
        axes.set_xticks(range(len(speakers)), speakers)
        axes.set_ylabel("greedy WER on the held-out speaker (%)")
        axes.set_title(f"{label}")
        axes.set_ylim(0, 1.45 * highest)  # headroom, so the legend never hides a bar
        axes.legend(fontsize="small", loc="upper left", ncol=2)
    figure.suptitle(title)
    save_png(figure, path)


def _compare(loso_dir: Path, rows: list[dict], other_dir: Path, other_rows: list[dict]) -> None:
    """The paired comparison: per speaker both runs finished, this run's WER against the other's, on the
    pause-joined strings and (when every common fold of both runs has it) on the fluent probe."""
    mine = {row["speaker"]: row for row in rows}
    theirs = {row["speaker"]: row for row in other_rows}
    common, unpaired = _paired_speakers(rows, other_rows)
    if unpaired:
        print(
            f"loso_summary: {', '.join(unpaired)}: scored on other audio in {other_dir} "
            "(audio_sha256 differs: the corpus was built otherwise): left out of the comparison",
            file=sys.stderr,
        )
    name, other = loso_dir.name, other_dir.name
    mine_rows, their_rows = [mine[s] for s in common], [theirs[s] for s in common]
    measures = [
        (key, prefix)
        for key, prefix, _ in MEASURES
        if mean_over_folds(mine_rows, key) is not None and mean_over_folds(their_rows, key) is not None
    ]
    pairs = []
    for speaker in common:
        pair = {"speaker": speaker}
        for key, prefix in measures:
            pair |= {
                f"{prefix}wer_{other}": theirs[speaker][key],
                f"{prefix}wer_{name}": mine[speaker][key],
                f"{prefix}change_points": round(100 * (mine[speaker][key] - theirs[speaker][key]), 2),
            }
        pairs.append(pair)
    summary = {"run": name, "against": other, "speakers": len(common)}
    for key, prefix in measures:
        mean_mine, mean_theirs = mean_over_folds(mine_rows, key), mean_over_folds(their_rows, key)
        summary |= {
            f"{prefix}mean_wer_{other}": mean_theirs,
            f"{prefix}mean_wer_{name}": mean_mine,
            f"{prefix}mean_change_points": round(100 * (mean_mine - mean_theirs), 2),
            f"{prefix}folds_better": sum(pair[f"{prefix}change_points"] < 0 for pair in pairs),
        }
    summary["pairs"] = pairs
    write_json(loso_dir / f"against_{other}.json", summary)
    header, rule = "| held-out speaker |", "|---|"
    for _, prefix in measures:
        label = prefix.replace("_", " ")
        header += f" {label}{other} | {label}{name} | {label}change (points) |"
        rule += "---|---|---|"
    lines = [header, rule]
    for pair in pairs:
        cells = [
            f" {100 * pair[f'{p}wer_{other}']:.2f}% | {100 * pair[f'{p}wer_{name}']:.2f}% "
            f"| {pair[f'{p}change_points']:+.2f} |"
            for _, p in measures
        ]
        lines.append(f"| {pair['speaker']} |" + "".join(cells))
    means = [
        f" **{100 * summary[f'{p}mean_wer_{other}']:.2f}%** "
        f"| **{100 * summary[f'{p}mean_wer_{name}']:.2f}%** "
        f"| **{summary[f'{p}mean_change_points']:+.2f}** "
        f"({summary[f'{p}folds_better']} of {len(common)} better) |"
        for _, p in measures
    ]
    lines.append(f"| **mean over {len(common)} speakers** |" + "".join(means))
    with atomic_open(loso_dir / f"against_{other}.md", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    _plot(
        {other: their_rows, name: mine_rows},
        loso_dir / f"against_{other}.png",
        f"leave-one-speaker-out: {name} against {other}",
    )
    print("\n".join(lines))


def _paired_speakers(rows: list[dict], other_rows: list[dict]) -> tuple[list[str], list[str]]:
    """The speakers both runs finished, split into those scored on the same audio (or not known to differ:
    summaries older than the fingerprints) and those whose held-out strings or probe differ."""
    mine = {row["speaker"]: row for row in rows}
    theirs = {row["speaker"]: row for row in other_rows}
    paired, unpaired = [], []
    for speaker in sorted(mine.keys() & theirs.keys()):
        differs = any(
            mine[speaker][key] and theirs[speaker][key] and mine[speaker][key] != theirs[speaker][key]
            for key in ("audio_sha256", "probe_audio_sha256")
        )
        (unpaired if differs else paired).append(speaker)
    return paired, unpaired


def _against_problem(loso_dir: Path, rows: list[dict], other_dir: Path, other_rows: list[dict]) -> str | None:
    """Why the two runs cannot be compared, checked before anything is written; None when they can."""
    if not other_rows:
        return "holds no */eval/test_speaker.summary.json"
    if other_dir.name == loso_dir.name:
        return f"both runs are named {loso_dir.name}"
    paired, unpaired = _paired_speakers(rows, other_rows)
    if not paired:
        if unpaired:
            names = ", ".join(unpaired)
            return f"its folds {names} were scored on other audio than {loso_dir}'s (audio_sha256)"
        return f"no fold finished in both it and {loso_dir}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loso_dir", type=Path, help="folder of the run (one sub-folder per held-out speaker)")
    parser.add_argument(
        "--against", type=Path, help="another run's folder (its control): compared on the folds both finished"
    )
    args = parser.parse_args()
    rows = fold_rows(args.loso_dir)
    if not rows:
        print(f"loso_summary: {args.loso_dir} holds no */eval/test_speaker.summary.json", file=sys.stderr)
        return 2
    other_rows = fold_rows(args.against) if args.against else []
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
    probe_mean = mean_over_folds(rows, "probe_wer")
    summary = {
        "speakers": len(rows),
        "mean_wer": mean,
        "pooled_wer": pooled,
        "worst": worst,
        "mean_probe_wer": probe_mean,
        "rows": rows,
    }
    write_json(args.loso_dir / "loso.json", summary)
    lines = [
        "| held-out speaker | words | WER | S / D / I | sentence errors | fluent probe WER (S / D / I) "
        "| epochs | epochs on the blank plateau | training s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['speaker']} | {r['words']} | {100 * r['wer']:.2f}%{' (blank plateau)' * r['blank_plateau']} "
        f"| {_kinds(r)} | {100 * r['sentence_error_rate']:.1f}% | {_probe_cell(r)} "
        f"| {r['epochs']} | {'-' if r['plateau_epochs'] is None else r['plateau_epochs']} "
        f"| {r['train_seconds']:.0f} |"
        for r in rows
    ]
    probe_cell = "-" if probe_mean is None else f"**{100 * probe_mean:.2f}%**"
    lines.append(f"| **mean over {len(rows)} speakers** | | **{100 * mean:.2f}%** | | | {probe_cell} | | | |")
    lines.append(f"| worst ({worst['speaker']}) | | {100 * worst['wer']:.2f}% | | | | | | |")
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
            f"loso_summary: {', '.join(stuck)}: still on CTC's blank plateau (validation WER 100%, or most "
            "validation words deleted); "
            "their WER measures the training budget: train longer to compare levers",
            file=sys.stderr,
        )
    if len(rows) < 6:
        print(f"loso_summary: only {len(rows)} speakers finished", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
