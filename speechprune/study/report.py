"""The study's report: a Markdown table per decoder configuration and the plots, from typed rows.

``speechprune report DIR`` redraws it from ``DIR/results.json`` alone (:func:`read_results`), so a report
can be regenerated, or restyled, without measuring again.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from common.errors import SpeechpruneError
from common.fileio import atomic_open, write_csv, write_json
from speechprune.study.plots import (
    PRIMARY_DECODER,
    plot_decoder_time,
    plot_entropy_vs_search,
    plot_latency_breakdown,
    plot_levers,
    plot_pareto,
    plot_weight_sweep,
)
from speechprune.study.rows import StudyRow, fixed_configuration

RESULTS_NAME = "results.json"


SUMMARY_COLUMNS = (
    ("model", "model"),
    ("lstm_sparsity", "sparsity"),
    ("parameters", "params"),
    ("wer", "WER"),
    ("beam_threshold", "thr"),
    ("temperature", "T"),
    ("entropy_mean", "H mean"),
    ("entropy_nonblank_mean", "H non-blank"),
    ("mac_reduction", "MAC ÷"),
    ("encoder_ms_1t", "enc ms 1t"),
    ("encoder_speedup_1t", "enc speedup 1t"),
    ("encoder_ms_2t", "enc ms 2t"),
    ("decoder_ms", "dec ms"),
    ("decoder_slowdown", "dec ×"),
    ("end_to_end_ms_1t", "e2e ms 1t"),
    ("rtf_1t", "RTF 1t"),
)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key in ("wer", "lstm_sparsity"):
        return f"{100 * value:.2f}%" if key == "wer" else f"{100 * value:.0f}%"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def markdown_summary(rows: list[StudyRow]) -> str:
    """One table per decoder configuration, models as rows, plus own-decoder search columns."""
    lines = []
    for decoder in sorted({r.decoder for r in rows}):
        columns = list(SUMMARY_COLUMNS)
        if decoder.startswith("own"):
            columns.insert(6, ("extensions_per_frame", "ext/frame"))
            columns.insert(7, ("active_mean", "active"))
        lines += [f"### decoder: {decoder}", ""]
        lines.append("| " + " | ".join(title for _, title in columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in (r.to_flat() for r in rows if r.decoder == decoder):
            lines.append("| " + " | ".join(_cell(k, row.get(k)) for k, _ in columns) + " |")
        lines.append("")
    return "\n".join(lines)


def over_seeds(rows: list[StudyRow]) -> list[dict[str, Any]]:
    """Rows that differ only in their pruning run's seed, as one record each: mean and spread (half the
    range) of WER and decoder time, the time also as a ratio to the unpruned model's with the fixed
    settings of the same configuration (``+thr``/``+T`` rows included), so levers compare on one scale."""
    fixed = {r.decoder: r.decoder_ms for r in rows if r.is_reference}
    groups: dict[tuple[Any, ...], list[StudyRow]] = defaultdict(list)
    for row in rows:
        if row.seed is not None:
            key = (row.decoder, row.runtime, row.method, row.regularizer, row.regularizer_weight)
            groups[(*key, row.target_sparsity)].append(row)
    records = []
    for (decoder, runtime, method, regularizer, weight, sparsity), members in sorted(groups.items()):
        if len({r.seed for r in members}) < 2:
            continue
        members = sorted(members, key=lambda r: r.seed or 0)  # every list column in the seeds' order
        reference = fixed.get(fixed_configuration(decoder))
        record: dict[str, Any] = {
            "decoder": decoder,
            "runtime": runtime,
            "method": method,
            "regularizer": regularizer,
            "regularizer_weight": weight,
            "target_sparsity": sparsity,
            "seeds": " ".join(str(r.seed) for r in members),
        }
        values = {
            "wer": [r.wer for r in members],
            "decoder_ms": [r.decoder_ms for r in members],
            "decoder_vs_unpruned_fixed": [r.decoder_ms / reference for r in members] if reference else [],
        }
        for name, series in values.items():
            if series:
                record[f"{name}_mean"] = round(statistics.fmean(series), 5)
                record[f"{name}_spread"] = round((max(series) - min(series)) / 2, 5)
        record["beam_thresholds"] = " ".join(
            "-" if r.beam_threshold is None else f"{r.beam_threshold:g}" for r in members
        )
        record["temperatures"] = " ".join(f"{r.temperature:g}" for r in members)
        records.append(record)
    return records


def markdown_over_seeds(records: list[dict[str, Any]]) -> str:
    """The repeated runs' table: mean ± spread per configuration, model kind and sparsity."""
    if not records:
        return ""
    lines = [
        "### over seeds (mean ± half the range)",
        "",
        "| decoder | model | sparsity | seeds | WER | dec ms | dec ÷ unpruned fixed | thr | T |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        kind = (
            "vanilla" if r["regularizer_weight"] == 0 else f"{r['regularizer']} λ={r['regularizer_weight']:g}"
        )
        decoder = r["decoder"] if r["runtime"] == "torch" else f"{r['decoder']}@{r['runtime']}"
        ratio = (
            f"{r['decoder_vs_unpruned_fixed_mean']:.3f} ± {r['decoder_vs_unpruned_fixed_spread']:.3f}"
            if "decoder_vs_unpruned_fixed_mean" in r
            else ""
        )
        lines.append(
            f"| {decoder} | {r['method']}, {kind} | {100 * r['target_sparsity']:.0f}% | {r['seeds']} "
            f"| {100 * r['wer_mean']:.2f} ± {100 * r['wer_spread']:.2f}% "
            f"| {r['decoder_ms_mean']:.3f} ± {r['decoder_ms_spread']:.3f} | {ratio} "
            f"| {r['beam_thresholds']} | {r['temperatures']} |"
        )
    return "\n".join([*lines, ""])


def write_report(rows: list[StudyRow], out: Path) -> list[Path]:
    """All plots, ``summary.md`` and (when runs were repeated with other seeds) ``seeds.csv`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_decoder_time(rows, out), plot_entropy_vs_search(rows, out)]
    decoders = {r.decoder for r in rows}
    primary = PRIMARY_DECODER if PRIMARY_DECODER in decoders else sorted(decoders)[0]
    paths += [plot_pareto(rows, out, primary), plot_latency_breakdown(rows, out, primary)]
    optional = [plot_levers(rows, out), plot_weight_sweep(rows, out)]
    paths += [path for path in optional if path is not None]
    seeds = over_seeds(rows)
    if seeds:
        write_csv(out / "seeds.csv", seeds)
        paths.append(out / "seeds.csv")
    summary = out / "summary.md"
    with atomic_open(summary, "w") as handle:
        handle.write("\n".join(part for part in (markdown_summary(rows), markdown_over_seeds(seeds)) if part))
    return [*paths, summary]


def write_results(rows: list[StudyRow], out: Path) -> list[Path]:
    """``results.json`` and ``results.csv`` (flat columns), atomically."""
    flat = [row.to_flat() for row in rows]
    write_json(out / RESULTS_NAME, flat)
    write_csv(out / "results.csv", flat)
    return [out / RESULTS_NAME, out / "results.csv"]


def read_results(run_dir: Path) -> list[StudyRow]:
    """The rows of ``run_dir/results.json``; a missing or malformed file is one clear error."""
    path = run_dir / RESULTS_NAME
    if not path.is_file():
        raise SpeechpruneError(f"{path}: no study results here (run 'speechprune study' first)")
    try:
        return [StudyRow.from_flat(flat) for flat in json.loads(path.read_text(encoding="utf-8"))]
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SpeechpruneError(f"{path}: not valid JSON ({error})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise SpeechpruneError(
            f"{path}: not a study results file ({type(error).__name__}: {error})"
        ) from None
