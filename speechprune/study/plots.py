"""Plots of a pruning study (rows from :func:`speechprune.study.run.run_study`).

One message per plot: what pruning does to decoder time (with and without the regularizer), which models
are worth deploying (WER vs end-to-end latency), where the time goes (encoder vs decoder), whether
output entropy predicts the search size, and (with re-tuned rows) what the free levers buy beside it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from speechprune.figures import save_png
from speechprune.study.rows import StudyRow

Row = StudyRow
PRIMARY_DECODER = "flashlight"


def _series_key(row: Row) -> str:
    if row.is_unpruned:
        name = "unpruned"
    elif row.method == "model":  # model files given as they are
        name = "models"
    elif row.regularizer_weight == 0:
        name = f"{row.method}, vanilla"
    else:
        name = f"{row.method}, {row.regularizer} λ={row.regularizer_weight:g}"
    return name if row.runtime == "torch" else f"{name} [{row.runtime}]"


def _by_series(rows: list[Row], decoder: str) -> dict[str, list[Row]]:
    series: dict[str, list[Row]] = defaultdict(list)
    base = {r.runtime: r for r in rows if r.decoder == decoder and r.is_unpruned}
    for row in rows:
        if row.decoder == decoder and not row.is_unpruned:
            series[_series_key(row)].append(row)
    for key, members in series.items():  # every curve starts at the unpruned model on its runtime
        start = [base[members[0].runtime]] if members[0].runtime in base else []
        series[key] = sorted(start + members, key=lambda r: r.lstm_sparsity)
    return dict(sorted(series.items()))


def _style(series: list[Row]) -> dict[str, Any]:
    """Dashed for vanilla pruning (lambda = 0), solid with the regularizer; a marker per criterion."""
    pruned = series[-1]
    markers = {"mnp": "o", "vib": "s", "energy": "^", "random": "x"}
    return {
        "linestyle": "--" if pruned.regularizer_weight == 0 else "-",
        "marker": markers.get(pruned.method, "d"),
    }


def plot_decoder_time(rows: list[Row], out: Path) -> Path:
    decoders = sorted({r.decoder for r in rows})
    columns = min(3, len(decoders))
    grid_rows = -(-len(decoders) // columns)
    figure, axes = plt.subplots(grid_rows, columns, figsize=(4.6 * columns, 3.8 * grid_rows), squeeze=False)
    for axis in axes.flat[len(decoders) :]:
        axis.set_visible(False)
    for axis, decoder in zip(axes.flat, decoders, strict=False):
        for key, series in _by_series(rows, decoder).items():
            axis.plot(
                [100 * r.lstm_sparsity for r in series],
                [r.decoder_ms for r in series],
                label=key,
                **_style(series),
            )
        axis.set_title(f"decoder: {decoder}")
        axis.set_xlabel("LSTM units removed (%)")
        axis.set_ylabel("decoder time per utterance (ms)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle("Decoder time vs sparsity: vanilla (dashed) vs entropy-regularized (solid) pruning")
    return save_png(figure, out / "decoder_time_vs_sparsity.png")


LEVER_MARKERS = {"": "o", "+thr": "s", "+T": "^"}  # fixed decoder, re-tuned threshold, temperature


def plot_levers(rows: list[Row], out: Path) -> Path | None:
    """Decoder time against WER per model for the fixed decoder and each re-tuned lever (one panel per
    configuration that has them): at equal WER, a regularizer must sit below the free levers' points."""
    bases = sorted({r.decoder.rsplit("+", 1)[0] for r in rows if r.decoder.endswith(("+thr", "+T"))})
    if not bases:
        return None
    figure, axes = plt.subplots(1, len(bases), figsize=(5.6 * len(bases), 4.4), squeeze=False)
    colors = {key: f"C{i}" for i, key in enumerate(sorted({_series_key(r) for r in rows}))}
    for axis, base in zip(axes.flat, bases, strict=True):
        for lever, marker in LEVER_MARKERS.items():
            members = [r for r in rows if r.decoder == base + lever and r.runtime == "torch"]
            for row in members:
                axis.scatter(100 * row.wer, row.decoder_ms, marker=marker, color=colors[_series_key(row)])
                if not lever:
                    axis.annotate(
                        f"{100 * row.lstm_sparsity:.0f}%", (100 * row.wer, row.decoder_ms), fontsize=7
                    )
        for key, color in colors.items():
            axis.scatter([], [], color=color, label=key)
        for lever, marker in LEVER_MARKERS.items():
            axis.scatter([], [], marker=marker, color="black", label=f"decoder {lever or 'fixed'}")
        axis.set_title(f"decoder: {base} (labels: LSTM units removed)")
        axis.set_xlabel("WER (%)")
        axis.set_ylabel("decoder time per utterance (ms)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.suptitle(
        "Free levers: each model's own beam threshold (+thr) or temperature (+T),\n"
        "the fastest within its own validation WER",
        fontsize=10,
    )
    figure.tight_layout()
    return save_png(figure, out / "levers_decoder_time_vs_wer.png")


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (latency, wer) not beaten on both axes by another, by increasing latency."""
    front, best_wer = [], float("inf")
    for latency, wer in sorted(points):
        if wer < best_wer:
            front.append((latency, wer))
            best_wer = wer
    return front


def plot_pareto(rows: list[Row], out: Path, decoder: str = PRIMARY_DECODER, threads: int = 1) -> Path:
    figure, axis = plt.subplots(figsize=(6.4, 4.6))
    chosen = [r for r in rows if r.decoder == decoder]
    for key, series in _by_series(rows, decoder).items():
        pruned = [r for r in series if not r.is_unpruned]
        axis.scatter(
            [r.end_to_end_ms[threads] for r in pruned],
            [100 * r.wer for r in pruned],
            label=key,
            marker=_style(series)["marker"],
        )
    for row in chosen:
        if row.is_unpruned:
            axis.scatter(
                [row.end_to_end_ms[threads]],
                [100 * row.wer],
                color="black" if row.runtime == "torch" else None,
                marker="*",
                s=160,
                label=_series_key(row),
            )
    front = pareto_front([(r.end_to_end_ms[threads], 100 * r.wer) for r in chosen])
    axis.plot(*zip(*front, strict=True), color="grey", linewidth=1, label="Pareto front")
    axis.set_xlabel(f"end-to-end latency per utterance, {threads} thread (ms)")
    axis.set_ylabel("WER (%)")
    axis.set_title(f"Accuracy vs end-to-end latency (decoder: {decoder})")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return save_png(figure, out / "pareto_wer_latency.png")


def plot_latency_breakdown(
    rows: list[Row], out: Path, decoder: str = PRIMARY_DECODER, threads: int = 1
) -> Path:
    chosen = sorted(
        (r for r in rows if r.decoder == decoder),
        key=lambda r: (r.runtime, not r.is_unpruned, r.method, r.lstm_sparsity, r.regularizer_weight),
    )
    labels = [r.model for r in chosen]
    encoder = [r.encoder_ms[threads] for r in chosen]
    decoder_ms = [r.decoder_ms for r in chosen]
    figure, axis = plt.subplots(figsize=(max(6.0, 0.55 * len(labels)), 4.6))
    axis.bar(labels, encoder, label=f"encoder ({threads} thread)")
    axis.bar(labels, decoder_ms, bottom=encoder, label=f"decoder ({decoder})")
    axis.set_ylabel("latency per utterance (ms)")
    axis.set_title("Where the time goes: encoder vs decoder")
    axis.tick_params(axis="x", rotation=70, labelsize=7)
    axis.legend()
    axis.grid(axis="y", alpha=0.3)
    return save_png(figure, out / "latency_breakdown.png")


def plot_entropy_vs_search(rows: list[Row], out: Path) -> Path:
    """Search size from the loosest own-decoder configuration: there the search has room to grow."""
    decoder = "own-wide" if any(r.decoder == "own-wide" for r in rows) else "own"
    own = [r for r in rows if r.decoder == decoder and "extensions_per_frame" in r.search]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for axis, entropy_of, title in (
        (axes[0], lambda r: r.entropy_mean, "mean frame entropy (nats)"),
        (axes[1], lambda r: r.entropy_nonblank_mean, "mean entropy of non-blank frames (nats)"),
    ):
        groups: dict[str, list[Row]] = defaultdict(list)
        for row in own:
            groups[_series_key(row)].append(row)
        for key, group in sorted(groups.items()):
            axis.scatter(
                [entropy_of(r) for r in group], [r.search["extensions_per_frame"] for r in group], label=key
            )
        axis.set_xlabel(title)
        axis.set_ylabel(f"prefix extensions per frame ({decoder})")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle("Does output entropy predict the search space?")
    return save_png(figure, out / "entropy_vs_search.png")
