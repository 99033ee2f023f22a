"""The study that tests the search's claim: at each budget, which method gives the most accurate model?

Every run is the search config with one decoder setting (``decoders``: where the decoder is cheap, and
where it matters) and one method's overrides (``methods``: the ``end_to_end`` objective, ``encoder``,
``macs``, co-tuned decoder settings, the entropy regularizer...); the uniform-pruning baseline comes with
the runs that set ``search.uniform_sparsities``. Each run is an ordinary search in its own folder (so the
study resumes run by run, and each run's final check is its own separate interleaved measurement), and
all runs share one fine-tune cache, because runs that differ only in how they measure walk through many of
the same candidates.

The report puts every budget's final model of every run in one table (test WERs, measured end-to-end
latency and its ratio to the budget, the decoder's share, the widths, the search's cost) with two plots.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from asr.config import apply_overrides
from common.errors import SpeechpruneError
from common.fileio import atomic_open, write_csv, write_json
from speechprune.search.job import RESULTS_NAME, run_search
from speechprune.search.study_plots import write_study_plots
from speechprune.search.targets import LatencyTarget

STUDY_KEYS = {"budgets", "decoders", "methods", "runs"}


@dataclass
class StudyConfig:
    """The study file: ``budgets`` for every run, named ``decoders`` (decoder sections), named
    ``methods`` (dotted overrides of the search config) and the ``runs`` as [decoder, method] pairs."""

    budgets: list[Any]
    decoders: dict[str, dict[str, Any]]
    methods: dict[str, dict[str, Any]]
    runs: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str) -> StudyConfig:
        unknown = sorted(set(values) - STUDY_KEYS)
        if unknown:
            raise SpeechpruneError(f"{source}: unknown keys {unknown}; known: {sorted(STUDY_KEYS)}")
        missing = sorted(STUDY_KEYS - set(values))
        if missing:
            raise SpeechpruneError(f"{source}: missing {missing}")
        runs = []
        for run in values["runs"]:
            if not (isinstance(run, list) and len(run) == 2):
                raise SpeechpruneError(f"{source}: a run is a [decoder, method] pair, got {run!r}")
            decoder, method = run
            if decoder not in values["decoders"] or method not in values["methods"]:
                raise SpeechpruneError(f"{source}: run {run}: no such decoder or method")
            runs.append((str(decoder), str(method)))
        return cls(list(values["budgets"]), dict(values["decoders"]), dict(values["methods"]), runs)

    def run_name(self, decoder: str, method: str) -> str:
        return f"{decoder}-{method}"

    def run_config(self, base: dict[str, Any], decoder: str, method: str) -> dict[str, Any]:
        """The search config of one run: the base, this decoder section, the budgets, the method."""
        config = copy.deepcopy(base)
        config["decoder"] = dict(self.decoders[decoder])
        config.setdefault("search", {})["budgets"] = list(self.budgets)
        overrides = [f"{key}={_yaml(value)}" for key, value in self.methods[method].items()]
        return apply_overrides(config, overrides)


def _yaml(value: Any) -> str:
    """A value as the YAML text an override takes (flow style, one line)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def run_study(
    base_config: dict[str, Any],
    study: StudyConfig,
    base_model: Path,
    exp_dir: Path,
    test_manifests: list[Path],
    progress: bool = True,
    target: LatencyTarget | None = None,
) -> dict[str, Any]:
    """Run (or resume) every run of the study, then write its table and plots; returns the report.

    ``target`` replaces the config's (local) target in every run: a remote device, or a fake in tests."""
    failed: dict[str, str] = {}
    for decoder, method in study.runs:
        name = study.run_name(decoder, method)
        if progress:
            print(f"== search study: run {name}", flush=True)
        try:
            config = study.run_config(base_config, decoder, method)
            if not config["search"].get("finetune_cache"):
                config["search"]["finetune_cache"] = str(exp_dir / "finetune_cache")
            run_search(
                config,
                base_model,
                exp_dir / name,
                test_manifests=test_manifests,
                target=target,
                progress=progress,
            )
        except SpeechpruneError as error:  # one broken run must not cost the others
            failed[name] = str(error)
            print(f"search study: run {name} failed: {error}", flush=True)
    return write_study_report(study, exp_dir, failed)


def finished_runs(study: StudyConfig, exp_dir: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(decoder, method, results) of every run that has written its results, in the study's order."""
    finished = []
    for decoder, method in study.runs:
        path = exp_dir / study.run_name(decoder, method) / RESULTS_NAME
        if path.is_file():
            finished.append((decoder, method, json.loads(path.read_text(encoding="utf-8"))))
    return finished


def study_rows(finished: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (run, method, budget): the final model's measured fit, or the closest miss."""
    rows = []
    for decoder, method, results in finished:
        common = {
            "decoder": decoder,
            "objective": results["objective"],
            "candidates_evaluated": results["candidates_evaluated"],
            "search_minutes": round(results.get("elapsed_seconds", 0.0) / 60, 1),
            "noise_floor": results["noise_floor"]["copy_end_to_end_ratio"],
            "calibration": results["calibration_manifest"],
            "unpruned_ms_per_second": results["unpruned"]["ms_per_second"],
        }
        # the uniform baseline meets the run's own kind of budget, with its decoder: named by the run's method
        uniform = "uniform" if method == "end_to_end" else f"uniform ({method})"
        for final in results["finals"]:
            label = uniform if final["method"] == "uniform" else method
            total = final["encoder_ms"] + final["decoder_ms"]
            row = {
                **common,
                "method": label,
                "budget": final["budget"],
                "budget_value": final["budget_value"],
                "met": True,
                "end_to_end_ratio": final["end_to_end_ratio"],
                "end_to_end_ratio_checks": " ".join(map(str, final.get("end_to_end_ratio_checks") or [])),
                "end_to_end_to_budget": round(final["end_to_end_ratio"] / final["budget_value"], 4)
                if final["budget_unit"] == "fraction"
                else None,
                "objective_to_budget": final["objective_ratio_to_budget"],
                "encoder_ms": final["encoder_ms"],
                "decoder_ms": final["decoder_ms"],
                "decoder_share": round(final["decoder_ms"] / total, 4) if total else None,
                "widths": " ".join(f"{g}={w}" for g, w in final["widths"].items()),
                "decoder_settings": _decoder_label(final["decoder"]),
                "wer_calibration": final["wer_calibration"],
            }
            row.update({f"wer_{k}": v for k, v in (final["test_wer"] or {}).items()})
            rows.append(row)
        for unmet in results["unmet_budgets"]:
            rows.append(
                {
                    **common,
                    "method": uniform if unmet["method"] == "uniform" else method,
                    "budget": unmet["budget"],
                    "budget_value": _budget_value(unmet["budget"]),
                    "met": False,
                    "closest": unmet["closest"],
                    "closest_value": unmet["closest_value"],
                    "wer_calibration": unmet["closest_wer"],
                }
            )
    return rows


def _budget_value(label: str) -> float | None:
    """60pct -> 0.6 (the label :class:`Budget` writes); None for a budget in ms/s."""
    return float(label.removesuffix("pct")) / 100 if label.endswith("pct") else None


def _decoder_label(decoder: dict[str, Any]) -> str:
    if decoder["backend"] == "greedy":
        return "greedy"
    threshold = decoder.get("beam_threshold")
    text = f"{decoder['backend']} beam {decoder['beam_width']}"
    text += f" thr {threshold:g}" if threshold is not None else ""
    return text + (" +LM" if decoder.get("lm_path") else "")


def write_study_report(study: StudyConfig, exp_dir: Path, failed: dict[str, str]) -> dict[str, Any]:
    """study.json / study.csv / study.md and the two plots, from the runs' results files."""
    finished = finished_runs(study, exp_dir)
    rows = study_rows(finished)
    names = [study.run_name(d, m) for d, m in study.runs]
    done = {study.run_name(d, m) for d, m, _ in finished}
    report = {
        "budgets": study.budgets,
        "runs": names,
        "missing_runs": sorted(set(names) - done - set(failed)),
        "failed_runs": failed,
        "rows": rows,
    }
    out = exp_dir / "study"
    write_json(out / "study.json", report)
    write_csv(out / "study.csv", rows)
    with atomic_open(out / "study.md", "w", encoding="utf-8") as handle:
        handle.write("".join(f"{line}\n\n" for line in measured_on(study, finished)) + markdown_table(rows))
    report["plots"] = [str(p) for p in write_study_plots(rows, study, out)]
    return report


def measured_on(study: StudyConfig, finished: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """Where the table's latencies come from, one line per distinct target and calibration set: decoder
    cost depends on the speech and the device, so a table that does not say which is unreadable. Each
    line gives the noise floor of its runs (a second copy of the unpruned model timed against it)."""
    sources: dict[str, tuple[list[str], list[float]]] = {}
    for decoder, method, results in finished:
        target = ", ".join(f"{k} {v}" for k, v in results["target"].items() if v not in (None, "", []))
        floor = results["noise_floor"]
        checks = floor.get("copy_end_to_end_ratio_checks") or [floor["copy_end_to_end_ratio"]]
        source = (
            f"Latencies measured on the target ({target}) over `{results['calibration_manifest']}` "
            f"({results['calibration_utterances']} utterances), each final model in {len(checks)} separate "
            "interleaved run(s)"
        )
        names, copies = sources.setdefault(source, ([], []))
        names.append(study.run_name(decoder, method))
        copies.extend(checks)
    lines = []
    for source, (names, copies) in sources.items():
        scope = "" if len(sources) == 1 else f" (runs {', '.join(names)})"
        lines.append(
            f"{source}{scope}; a copy of the unpruned model read {min(copies):.3f}-{max(copies):.3f} of it."
        )
    return lines


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The study's table: a line per decoder, budget and method."""
    wer_keys = sorted({k for r in rows for k in r if k.startswith("wer_") and k != "wer_calibration"})
    header = (
        ["decoder", "budget", "method", "e2e / unpruned", "e2e / budget", "decoder share"]
        + [f"WER {k[4:]}" for k in wer_keys]
        + ["widths", "candidates", "search min"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    order = {"uniform": 0, "end_to_end": 1, "encoder": 3, "macs": 5, "co_tuned": 7, "entropy": 9}
    for row in sorted(
        rows,
        key=lambda r: (
            r["decoder"],
            -float(r.get("budget_value") or 0),
            order.get(r["method"].removeprefix("uniform (").rstrip(")"), 9)
            + r["method"].startswith("uniform ("),
        ),
    ):
        if row["met"]:
            cells = [
                row["decoder"],
                row["budget"],
                row["method"],
                f"{row['end_to_end_ratio']:.3f}",
                f"{row['end_to_end_to_budget']:.3f}" if row.get("end_to_end_to_budget") else "",
                f"{100 * row['decoder_share']:.0f}%" if row.get("decoder_share") is not None else "",
            ]
            cells += [f"{100 * row[k]:.2f}%" if k in row else "" for k in wer_keys]
            cells += [row["widths"], str(row["candidates_evaluated"]), str(row["search_minutes"])]
        else:
            cells = [
                row["decoder"],
                row["budget"],
                row["method"],
                f"not met (closest {row['closest_value']})",
            ]
            cells += [""] * (len(header) - len(cells) - 2)
            cells += [str(row["candidates_evaluated"]), str(row["search_minutes"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
