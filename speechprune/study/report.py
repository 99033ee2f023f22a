"""The study's report: a Markdown table per decoder configuration and the plots, from typed rows.

``speechprune report DIR`` redraws it from ``DIR/results.json`` alone (:func:`read_results`), so a report
can be regenerated, or restyled, without measuring again.
"""

from __future__ import annotations

import json
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
)
from speechprune.study.rows import StudyRow

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


def write_report(rows: list[StudyRow], out: Path) -> list[Path]:
    """All plots and ``summary.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_decoder_time(rows, out), plot_entropy_vs_search(rows, out)]
    decoders = {r.decoder for r in rows}
    primary = PRIMARY_DECODER if PRIMARY_DECODER in decoders else sorted(decoders)[0]
    paths += [plot_pareto(rows, out, primary), plot_latency_breakdown(rows, out, primary)]
    levers = plot_levers(rows, out)
    paths += [levers] if levers is not None else []
    summary = out / "summary.md"
    with atomic_open(summary, "w") as handle:
        handle.write(markdown_summary(rows))
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
