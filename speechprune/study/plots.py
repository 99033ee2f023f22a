"""Plots of a pruning study (rows from :func:`speechprune.study.run.run_study`).

One message per plot: what pruning does to decoder time (with and without the regularizer), which models
are worth deploying (WER vs end-to-end latency), where the time goes (encoder vs decoder), whether
output entropy predicts the search size, and (with re-tuned rows) what the free levers buy beside it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from speechprune.figures import save_png
from speechprune.study.rows import StudyRow, fixed_configuration

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


def _over_seeds(
    series: list[Row], x_of: Callable[[Row], float], y_of: Callable[[Row], float]
) -> tuple[list[float], list[float], list[list[float]]]:
    """Points of one curve, the runs repeated with other seeds averaged into one point: x, mean y and
    the asymmetric error bar (down to the lowest, up to the highest). Repeats are rows with a seed and
    the same target sparsity and weight (a VIB run's real sparsity differs a little by seed); other rows
    (the unpruned model, model files) stay points of their own with no bar."""
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for row in series:
        repeat = ("seeds", row.target_sparsity, row.regularizer_weight)
        groups[repeat if row.seed is not None else ("row", row.model)].append(row)
    points = sorted(
        (statistics.fmean(x_of(r) for r in members), [y_of(r) for r in members])
        for members in groups.values()
    )
    means = [statistics.fmean(ys) for _, ys in points]
    bars = [
        [m - min(ys) for m, (_, ys) in zip(means, points, strict=True)],
        [max(ys) - m for m, (_, ys) in zip(means, points, strict=True)],
    ]
    return [x for x, _ in points], means, bars


def plot_decoder_time(rows: list[Row], out: Path) -> Path:
    decoders = sorted({r.decoder for r in rows})
    columns = min(3, len(decoders))
    grid_rows = -(-len(decoders) // columns)
    figure, axes = plt.subplots(grid_rows, columns, figsize=(4.6 * columns, 3.8 * grid_rows), squeeze=False)
    for axis in axes.flat[len(decoders) :]:
        axis.set_visible(False)
    for axis, decoder in zip(axes.flat, decoders, strict=False):
        for key, series in _by_series(rows, decoder).items():
            sparsity, mean, spread = _over_seeds(series, lambda r: r.lstm_sparsity, lambda r: r.decoder_ms)
            axis.errorbar(
                [100 * x for x in sparsity], mean, yerr=spread, label=key, capsize=2, **_style(series)
            )
        axis.set_title(f"decoder: {decoder}")
        axis.set_xlabel("LSTM units removed (%)")
        axis.set_ylabel("decoder time per utterance (ms)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle(
        "Decoder time vs sparsity: vanilla (dashed) vs regularized (solid) pruning; bars: range over seeds"
    )
    return save_png(figure, out / "decoder_time_vs_sparsity.png")


LEVER_MARKERS = {"": "o", "+thr": "s", "+T": "^"}  # fixed decoder, re-tuned threshold, temperature


def plot_levers(rows: list[Row], out: Path) -> Path | None:
    """Decoder time against WER per model for the fixed decoder and each re-tuned lever (one panel per
    configuration that has them): at equal WER, a regularizer must sit below the free levers' points."""
    bases = sorted(
        {fixed_configuration(r.decoder) for r in rows if fixed_configuration(r.decoder) != r.decoder}
    )
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


def plot_weight_sweep(rows: list[Row], out: Path) -> Path | None:
    """Decoder time (as a ratio to the unpruned model's with the fixed settings) and WER against the
    regularizer's weight λ, per criterion and sparsity, mean over seeds with their range, for the fixed
    decoder and each re-tuned lever: does a heavier term buy what a free lever buys? None unless some
    criterion was run with two or more non-zero weights of one kind, and the study re-tuned the levers
    (``--retune-manifest``): the comparison is the point of the plot."""
    pruned = [r for r in rows if not r.is_unpruned and r.method != "model" and r.runtime == "torch"]
    swept = {
        (r.method, r.regularizer)
        for r in pruned
        if len(
            {q.regularizer_weight for q in pruned if (q.method, q.regularizer) == (r.method, r.regularizer)}
        )
        > 1
        and r.regularizer_weight > 0
    }
    bases = sorted(
        {fixed_configuration(r.decoder) for r in pruned if fixed_configuration(r.decoder) != r.decoder}
    )
    if not swept or not bases:
        return None
    base = PRIMARY_DECODER + "-wide" if PRIMARY_DECODER + "-wide" in bases else bases[0]
    reference = next(r.decoder_ms for r in rows if r.is_reference and r.decoder == base)
    sparsities = sorted({round(r.target_sparsity, 3) for r in pruned})
    figure, axes = plt.subplots(2, len(sparsities), figsize=(5.2 * len(sparsities), 7.2), squeeze=False)
    for column, sparsity in enumerate(sparsities):
        for index, (method, kind) in enumerate(sorted(swept)):
            for lever, style in (("", "-"), ("+thr", ":"), ("+T", "--")):
                series = [
                    r
                    for r in pruned
                    if r.decoder == base + lever
                    and r.method == method
                    and r.regularizer in (kind, "none")
                    and round(r.target_sparsity, 3) == sparsity
                ]
                if not series:
                    continue
                label = f"{method}, {kind}, decoder {lever or 'fixed'}"
                for axis, y_of in (
                    (axes[0][column], lambda r: r.decoder_ms / reference),
                    (axes[1][column], lambda r: 100 * r.wer),
                ):
                    x, mean, bars = _over_seeds(series, lambda r: r.regularizer_weight, y_of)
                    axis.errorbar(
                        x,
                        mean,
                        yerr=bars,
                        linestyle=style,
                        marker="o",
                        color=f"C{index}",
                        capsize=2,
                        label=label,
                    )
        top, bottom = axes[0][column], axes[1][column]
        top.axhline(1.0, color="black", linewidth=1, label=f"unpruned, {base} fixed")
        for lever, style in (("+thr", ":"), ("+T", "--")):  # the unpruned model with the same lever
            own = [r.decoder_ms for r in rows if r.is_reference and r.decoder == base + lever]
            if own:
                top.axhline(
                    own[0] / reference,
                    color="black",
                    linewidth=0.8,
                    linestyle=style,
                    label=f"unpruned, {base}{lever}",
                )
        top.set_yscale("log")
        top.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        top.yaxis.set_major_formatter(ScalarFormatter())
        top.yaxis.set_minor_formatter(NullFormatter())
        top.set_title(f"{100 * sparsity:.0f}% of LSTM units removed\ndecoder {base}", fontsize=10)
        top.set_ylabel("decoder time ÷ unpruned's (fixed settings)")
        bottom.set_ylabel("WER (%)")
        for axis in (top, bottom):
            axis.set_xscale("symlog", linthresh=0.3)
            axis.set_xlim(left=-0.05)
            axis.set_xlabel("regularizer weight λ (0 = vanilla)")
            axis.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    figure.suptitle("Regularizer weight against the free levers\n(mean over seeds, bars: range)", fontsize=10)
    figure.tight_layout()
    return save_png(figure, out / "weight_sweep.png")


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
