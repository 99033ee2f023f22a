"""What pruning costs a voice the model never heard: leave-one-speaker-out folds pruned (``run.sh --stage 9
--loso-prune RUNS``), every snapshot's greedy WER beside its unpruned fold's.

A pruned model fine-tunes on the training speakers only, so its loss on them says little about a new
user's voice; the folds measure both on the same model. Per fold ``LOSO_DIR/<speaker>/`` it reads
``eval/NAME.summary.json`` (the unpruned model) and ``prune/<RUN>/eval/sparsityNN/NAME.summary.json`` (each
snapshot), NAME being ``test_speaker`` (the held-out speaker's pause-joined strings), ``test_speaker_tight``
(its fluent probe) and ``test`` (the training speakers' takes never trained on), and writes
``pruning.{csv,json,md,png}`` into ``--out`` (default: the one LOSO_DIR). Changes are paired, fold by fold,
on the same audio (``audio_sha256``), since speakers differ by more than pruning moves them. Several
LOSO_DIRs pool their pruned folds, one run per speaker.

    python local/loso_pruning.py exp/loso/recipe
    python local/loso_pruning.py exp/loso/a exp/loso/b --runs mnp_vanilla vib_entropy --out exp/loso/pruned
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from loso_summary import mean_over_folds

from common.fileio import atomic_open, write_json

# the three measures of a model: summary file stem, column prefix, what it is
MEASURES = (
    ("test_speaker", "heldout", "held-out speaker, pause-joined"),
    ("test_speaker_tight", "probe", "held-out speaker, fluent probe"),
    ("test", "seen", "training speakers' unheard takes"),
)
UNPRUNED = "unpruned"
SNAPSHOT_EVAL = re.compile(r"sparsity(\d+)")  # run.sh's DIR/eval/sparsityNN, NN the percent removed


class InputError(Exception):
    """A fold or run that cannot be read or paired: one line, before anything is written."""


def _scores(eval_dir: Path) -> dict[str, dict]:
    """The summaries in ``eval_dir`` by measure. A measure is absent when its file is, or when evaluate
    could score none of its utterances (``wer`` null): it counts as not measured, never as 0%."""
    found = {}
    for stem, _, _ in MEASURES:
        path = eval_dir / f"{stem}.summary.json"
        if not path.is_file():
            continue
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: unreadable ({error})") from None
        if summary.get("wer") is not None:
            found[stem] = summary
    return found


def _row(speaker: str, source: Path, run: str, sparsity: float, scores: dict, base: dict) -> dict:
    """One model of one fold: WER on each measure and its change from the unpruned fold, in points."""
    row = {"speaker": speaker, "source": str(source), "run": run, "sparsity": sparsity, "parameters": None}
    for stem, prefix, _ in MEASURES:
        summary, reference = scores.get(stem), base.get(stem)
        if summary and reference and summary.get("audio_sha256") != reference.get("audio_sha256"):
            raise InputError(
                f"{source}: {run} at {sparsity:g} was scored on other {stem} audio than the unpruned fold "
                "(audio_sha256): rescore both on one corpus"
            )
        row["parameters"] = row["parameters"] or (summary or {}).get("parameters")
        row[f"{prefix}_wer"] = summary["wer"] if summary else None
        row[f"{prefix}_change_points"] = (
            round(100 * (summary["wer"] - reference["wer"]), 2) if summary and reference else None
        )
    return row


def fold_rows(loso_dirs: list[Path], runs: list[str] | None) -> list[dict]:
    """Every pruned fold of the runs (all found when ``runs`` is None): its unpruned row, then one row per
    snapshot, by speaker, run and sparsity."""
    rows: list[dict] = []
    owner: dict[str, Path] = {}
    for loso_dir in loso_dirs:
        for fold in sorted(path for path in loso_dir.iterdir() if (path / "prune").is_dir()):
            run_dirs = sorted(
                path for path in (fold / "prune").iterdir() if runs is None or path.name in runs
            )
            evaluated = [run for run in run_dirs if _snapshot_evals(run)]
            if not evaluated:
                continue
            if fold.name in owner:
                raise InputError(
                    f"{fold}: speaker {fold.name} was pruned in {owner[fold.name]} too; name one of them"
                )
            owner[fold.name] = loso_dir
            base = _scores(fold / "eval")
            if "test_speaker" not in base:
                raise InputError(
                    f"{fold}/eval/test_speaker.summary.json: missing; score the unpruned fold first"
                )
            rows.append(_row(fold.name, fold, UNPRUNED, 0.0, base, base))
            for run in evaluated:
                for sparsity, snapshot in _snapshot_evals(run):
                    rows.append(_row(fold.name, run, run.name, sparsity, _scores(snapshot), base))
    missing = sorted(set(runs or ()) - {row["run"] for row in rows})
    if missing and rows:
        raise InputError(f"--runs: no fold holds a scored snapshot of {' '.join(missing)}")
    return rows


def _snapshot_evals(run: Path) -> list[tuple[float, Path]]:
    """The run's scored snapshots as (sparsity, folder), other folders under ``eval/`` left alone."""
    found = []
    for folder in sorted((run / "eval").glob("sparsity*")):
        match = SNAPSHOT_EVAL.fullmatch(folder.name)
        if match and any(folder.glob("*.summary.json")):
            found.append((int(match.group(1)) / 100, folder))
    return found


def groups(rows: list[dict]) -> list[dict]:
    """Per run and sparsity (the unpruned models first): the folds' mean WER and mean change on each
    measure, how many folds got worse on the held-out speaker, and the worst fold there."""
    by_key: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for row in rows:
        by_key[(row["run"], row["sparsity"])].append(row)
    ordered = sorted(by_key, key=lambda key: (key[0] != UNPRUNED, key[0], key[1]))
    summary = []
    for run, sparsity in ordered:
        members = by_key[(run, sparsity)]
        group = {
            "run": run,
            "sparsity": sparsity,
            "folds": len(members),
            "speakers": [row["speaker"] for row in members],
            "parameters": mean_over_folds(members, "parameters"),
        }
        for _, prefix, _ in MEASURES:
            group[f"{prefix}_mean_wer"] = mean_over_folds(members, f"{prefix}_wer")
            group[f"{prefix}_mean_change_points"] = mean_over_folds(members, f"{prefix}_change_points")
        changes = [
            row["heldout_change_points"] for row in members if row["heldout_change_points"] is not None
        ]
        group["heldout_folds_changed"] = len(changes)  # folds with the measure on both models
        group["heldout_folds_worse"] = sum(change > 0 for change in changes)
        scored = [row for row in members if row["heldout_wer"] is not None]
        worst = max(scored, key=lambda row: row["heldout_wer"]) if scored else None
        group["heldout_worst"] = {"speaker": worst["speaker"], "wer": worst["heldout_wer"]} if worst else None
        summary.append(group)
    return summary


def _cell(wer: float | None, change: float | None, bold: bool = False) -> str:
    """A WER with its change in points, "-" where the measure is missing."""
    if wer is None:
        return "-"
    text = f"{100 * wer:.2f}%"
    text = f"**{text}**" if bold else text
    return text if change is None else f"{text} ({change:+.2f})"


def markdown(summary: list[dict], rows: list[dict]) -> str:
    """The table by run and sparsity (means over folds, changes in points from the unpruned folds), then
    every fold's figures."""
    labels = " | ".join(f"{label} (change)" for _, _, label in MEASURES)
    lines = [
        f"| run | sparsity | parameters | folds | {labels} | held-out: folds worse | worst held-out fold |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for group in summary:
        pruned = group["run"] != UNPRUNED
        cells = " | ".join(
            _cell(
                group[f"{p}_mean_wer"],
                group[f"{p}_mean_change_points"] if pruned else None,
                bold=p == "heldout",
            )
            for _, p, _ in MEASURES
        )
        worst = group["heldout_worst"]
        worst_cell = f"{worst['speaker']} {100 * worst['wer']:.2f}%" if worst else "-"
        worse = f"{group['heldout_folds_worse']} of {group['heldout_folds_changed']}" if pruned else "-"
        parameters = "-" if group["parameters"] is None else f"{group['parameters'] / 1e6:.2f} M"
        lines.append(
            f"| {group['run']} | {100 * group['sparsity']:.0f}% | {parameters} | {group['folds']} | {cells} "
            f"| {worse} | {worst_cell} |"
        )
    measures = " | ".join(label for _, _, label in MEASURES)
    lines += ["", f"| held-out speaker | run | sparsity | {measures} |"]
    lines.append("|---|---|---|---|---|---|")
    for row in sorted(rows, key=lambda r: (r["speaker"], r["run"] != UNPRUNED, r["run"], r["sparsity"])):
        cells = " | ".join(
            _cell(row[f"{p}_wer"], row[f"{p}_change_points"] if row["run"] != UNPRUNED else None)
            for _, p, _ in MEASURES
        )
        lines.append(f"| {row['speaker']} | {row['run']} | {100 * row['sparsity']:.0f}% | {cells} |")
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], rows: list[dict], path: Path) -> None:
    """One panel per measure: mean WER over folds against sparsity, one line per run from the unpruned
    models, each fold's figures as faint points behind it."""
    import matplotlib.pyplot as plt

    from speechprune.figures import save_png

    runs = sorted({group["run"] for group in summary} - {UNPRUNED})
    base = next(group for group in summary if group["run"] == UNPRUNED)
    figure, panels = plt.subplots(1, len(MEASURES), figsize=(5.2 * len(MEASURES), 3.9), squeeze=False)
    for axes, (_, prefix, label) in zip(panels[0], MEASURES, strict=True):
        for index, run in enumerate(runs):
            colour = f"C{index}"
            line = [base] + [group for group in summary if group["run"] == run]
            points = [
                (100 * g["sparsity"], 100 * g[f"{prefix}_mean_wer"])
                for g in line
                if g[f"{prefix}_mean_wer"] is not None
            ]
            if points:
                legend = f"{run} (mean of folds)"
                axes.plot(*zip(*points, strict=True), marker="o", color=colour, label=legend)
            folds = [
                (100 * r["sparsity"], 100 * r[f"{prefix}_wer"])
                for r in rows
                if r["run"] in (run, UNPRUNED) and r[f"{prefix}_wer"] is not None
            ]
            if folds:
                axes.scatter(*zip(*folds, strict=True), color=colour, alpha=0.25, s=14)
        axes.set_xlabel("LSTM units removed (%)")
        axes.set_ylabel("greedy WER (%)")
        axes.set_title(label)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small", loc="upper left")
    speakers = ", ".join(sorted({row["speaker"] for row in rows}))
    figure.suptitle(f"pruning a model trained without the speaker: folds {speakers}")
    save_png(figure, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loso_dirs", type=Path, nargs="+", help="leave-one-speaker-out run folders")
    parser.add_argument("--runs", nargs="+", help="only these pruning runs (default: every one found)")
    parser.add_argument("--out", type=Path, help="output folder (default: the LOSO_DIR, when there is one)")
    args = parser.parse_args()
    for loso_dir in args.loso_dirs:
        if not loso_dir.is_dir():
            print(f"loso_pruning: {loso_dir}: no such folder", file=sys.stderr)
            return 2
    if args.out is None and len(args.loso_dirs) > 1:
        print("loso_pruning: --out: needed with several LOSO_DIRs", file=sys.stderr)
        return 2
    out = args.out or args.loso_dirs[0]
    try:
        rows = fold_rows(args.loso_dirs, args.runs)
    except InputError as error:
        print(f"loso_pruning: {error}", file=sys.stderr)
        return 2
    if not rows:
        wanted = f" of {' '.join(args.runs)}" if args.runs else ""
        print(
            f"loso_pruning: no fold of {' '.join(map(str, args.loso_dirs))} holds a scored snapshot{wanted} "
            "(*/prune/RUN/eval/sparsityNN/); run stage 9 with --loso-prune",
            file=sys.stderr,
        )
        return 2
    summary = groups(rows)
    table = markdown(summary, rows)  # built before anything is written: a failure leaves no partial set
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "pruning.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_json(out / "pruning.json", {"groups": summary, "rows": rows})
    with atomic_open(out / "pruning.md", "w") as handle:
        handle.write(table)
    plot(summary, rows, out / "pruning.png")
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
