"""Judge a lever against its control over several seeds of each: a change counts only beyond the seed spread.

One leave-one-speaker-out run per arm misleads where a held-out speaker's WER rests on a few whole-word
confusions that a training seed tips either way (the ``nicolas`` fold read 20.82% and 32.89% for two seeds
of the same recipe, on the same machine and audio). This script takes the runs of each arm (one folder per
seed, as ``stage 9`` writes them) and, per fold that every run finished on the same audio, reports each
arm's seeds, their mean and range, and a verdict that needs no distributional assumption: **better** when
every lever seed beats every control seed, **worse** when every lever seed is behind every control seed,
else **inside the seed spread**. With two or three seeds an arm that verdict is coarse, and says so. Seeds
that happen to agree leave no spread at all (two seeds of the recipe read 22.19% both on ``george``), and
then a couple of words would decide; a change of means under ``--level-within`` points (0.5 by default,
12 of a fold's 2,411 words) is **level** whatever the seeds say.

    python local/loso_seeds.py --lever exp/loso/flite_t44 exp/loso/flite_t44_s2 \\
        --control exp/loso/control_f44 exp/loso/control_f44_s2 exp/loso/control_f44_s3 \\
        --out exp/loso/seeds_flite

Writes ``seeds.csv`` (one row per run, fold and measure), ``seeds.json``, ``seeds.md`` and ``seeds.png``
into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from loso_summary import MEASURES, fold_rows

from common.fileio import atomic_open, write_json

FINGERPRINTS = ("audio_sha256", "probe_audio_sha256")


VERDICTS = ("better", "worse", "inside the seed spread", "level")


def _verdict(lever: dict, control: dict, level_points: float) -> str:
    """``lever`` and ``control`` as :func:`_arm` describes them."""
    if 100 * abs(lever["mean"] - control["mean"]) < level_points:
        return "level"
    if lever["max"] < control["min"]:
        return "better"
    if lever["min"] > control["max"]:
        return "worse"
    return "inside the seed spread"


def _common_folds(runs: dict[Path, dict[str, dict]]) -> tuple[list[str], list[str]]:
    """The folds every run finished, split into those scored on one audio (fingerprints agree where present)
    and those some run scored on other audio."""
    speakers = set.intersection(*(set(rows) for rows in runs.values()))
    same, other = [], []
    for speaker in sorted(speakers):
        prints = [{rows[speaker][key] for rows in runs.values()} - {None} for key in FINGERPRINTS]
        (other if any(len(found) > 1 for found in prints) else same).append(speaker)
    return same, other


def _arm(values: list[float]) -> dict:
    return {"seeds": values, "mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def compare(lever_dirs: list[Path], control_dirs: list[Path], level_points: float = 0.5) -> dict:
    """Per fold and measure, both arms' seeds and the verdict (``level`` under ``level_points``); the means
    over folds of each arm's seed means. Raises ValueError naming the problem when the runs cannot be
    compared."""
    runs = {}
    for folder in [*lever_dirs, *control_dirs]:
        rows = fold_rows(folder)
        if not rows:
            raise ValueError(f"{folder} holds no */eval/test_speaker.summary.json")
        runs[folder] = {row["speaker"]: row for row in rows}
    folds, other_audio = _common_folds(runs)
    if not folds:
        raise ValueError("no fold was finished on the same audio by every run given")
    measures = [
        (key, label)
        for key, _, label in MEASURES
        if all(runs[folder][speaker][key] is not None for folder in runs for speaker in folds)
    ]
    result = {
        "lever": [str(folder) for folder in lever_dirs],
        "control": [str(folder) for folder in control_dirs],
        "level_within_points": level_points,
        "folds_left_out_other_audio": other_audio,
        # finished by some runs only: a fold judged on fewer seeds than the others would mislead
        "folds_left_out_unfinished": sorted(set().union(*runs.values()) - set(folds) - set(other_audio)),
        "measures": {},
    }
    for key, label in measures:
        per_fold = []
        for speaker in folds:
            lever = _arm([runs[folder][speaker][key] for folder in lever_dirs])
            control = _arm([runs[folder][speaker][key] for folder in control_dirs])
            per_fold.append(
                {
                    "speaker": speaker,
                    "lever": lever,
                    "control": control,
                    "change_points": round(100 * (lever["mean"] - control["mean"]), 2),
                    "control_range_points": round(100 * (control["max"] - control["min"]), 2),
                    "verdict": _verdict(lever, control, level_points),
                }
            )
        lever_mean = sum(fold["lever"]["mean"] for fold in per_fold) / len(per_fold)
        control_mean = sum(fold["control"]["mean"] for fold in per_fold) / len(per_fold)
        result["measures"][key] = {
            "label": label,
            "folds": per_fold,
            "mean_lever": lever_mean,
            "mean_control": control_mean,
            "mean_change_points": round(100 * (lever_mean - control_mean), 2),
            "verdicts": {
                verdict: sum(fold["verdict"] == verdict for fold in per_fold) for verdict in VERDICTS
            },
        }
    return result


def _seeds_cell(arm: dict) -> str:
    seeds = ", ".join(f"{100 * value:.2f}" for value in arm["seeds"])
    return f"{100 * arm['mean']:.2f}% ({seeds})"


def _table(result: dict) -> str:
    lines = []
    for measure in result["measures"].values():
        lines += [
            f"**{measure['label']}** (seeds: control {len(result['control'])}, lever {len(result['lever'])})",
            "",
            "| held-out speaker | control: mean (seeds) | lever: mean (seeds) | change of means (points) "
            "| control's seed range (points) | verdict |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {fold['speaker']} | {_seeds_cell(fold['control'])} | {_seeds_cell(fold['lever'])} "
            f"| {fold['change_points']:+.2f} | {fold['control_range_points']:.2f} | {fold['verdict']} |"
            for fold in measure["folds"]
        ]
        counts = ", ".join(f"{count} {verdict}" for verdict, count in measure["verdicts"].items() if count)
        lines += [
            f"| **mean over {len(measure['folds'])} folds** | **{100 * measure['mean_control']:.2f}%** "
            f"| **{100 * measure['mean_lever']:.2f}%** | **{measure['mean_change_points']:+.2f}** "
            f"| | {counts} |",
            "",
        ]
    return "\n".join(lines)


def _plot(result: dict, path: Path) -> None:
    """One panel per measure: every seed of both arms as a dot per fold, each arm's mean as a bar, so the
    seed spread is seen beside the change."""
    import matplotlib.pyplot as plt

    from speechprune.figures import save_png

    measures = list(result["measures"].values())
    figure, panels = plt.subplots(1, len(measures), figsize=(6.4 * len(measures), 3.8), squeeze=False)
    for axes, measure in zip(panels[0], measures, strict=True):
        speakers = [fold["speaker"] for fold in measure["folds"]]
        for index, arm in enumerate(("control", "lever")):
            offsets = [i + (index - 0.5) * 0.35 for i in range(len(speakers))]
            means = [100 * fold[arm]["mean"] for fold in measure["folds"]]
            axes.bar(offsets, means, 0.3, color=f"C{index}", alpha=0.35, label=f"{arm} mean of seeds")
            for offset, fold in zip(offsets, measure["folds"], strict=True):
                seeds = [100 * value for value in fold[arm]["seeds"]]
                axes.plot([offset] * len(seeds), seeds, "o", color=f"C{index}")
        axes.set_xticks(range(len(speakers)), speakers)
        axes.set_ylabel("greedy WER on the held-out speaker (%)")
        axes.set_title(measure["label"])
        # headroom above the highest seed, so the legend never hides a dot
        highest = max(
            100 * value
            for fold in measure["folds"]
            for arm in ("control", "lever")
            for value in fold[arm]["seeds"]
        )
        axes.set_ylim(0, 1.3 * highest)
        axes.legend(fontsize="small", loc="upper center", ncols=2)
    figure.suptitle("lever against control, every seed a dot")
    save_png(figure, path)


def _write_csv(result: dict, path: Path) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["measure", "arm", "run", "speaker", "wer"])
        for key, measure in result["measures"].items():
            for fold in measure["folds"]:
                for arm in ("control", "lever"):
                    for run, value in zip(result[arm], fold[arm]["seeds"], strict=True):
                        writer.writerow([key, arm, run, fold["speaker"], value])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lever", type=Path, nargs="+", required=True, help="the lever's runs, one per seed")
    parser.add_argument(
        "--control", type=Path, nargs="+", required=True, help="the control's runs, one per seed (2 or more)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for seeds.{csv,json,md,png}")
    parser.add_argument(
        "--level-within",
        type=float,
        default=0.5,
        metavar="POINTS",
        help="a change of means under this many WER points is level (default 0.5)",
    )
    args = parser.parse_args()
    if args.level_within < 0:
        print("loso_seeds: --level-within: must be 0 or more points", file=sys.stderr)
        return 2
    if len(args.control) < 2:
        print("loso_seeds: --control: a seed spread needs two or more runs of the control", file=sys.stderr)
        return 2
    repeated = sorted({str(d) for d in args.lever + args.control if (args.lever + args.control).count(d) > 1})
    if repeated:
        print(f"loso_seeds: {', '.join(repeated)} given twice", file=sys.stderr)
        return 2
    try:
        result = compare(args.lever, args.control, args.level_within)
    except ValueError as error:
        print(f"loso_seeds: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    table = _table(result)
    write_json(args.out / "seeds.json", result)
    with atomic_open(args.out / "seeds.md", "w") as handle:
        handle.write(table)
    _write_csv(result, args.out / "seeds.csv")
    _plot(result, args.out / "seeds.png")
    print(table)
    if result["folds_left_out_other_audio"]:
        folds = ", ".join(result["folds_left_out_other_audio"])
        print(f"loso_seeds: {folds}: scored on other audio by some run: left out", file=sys.stderr)
    if result["folds_left_out_unfinished"]:
        folds = ", ".join(result["folds_left_out_unfinished"])
        print(f"loso_seeds: {folds}: not finished by every run: left out", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
