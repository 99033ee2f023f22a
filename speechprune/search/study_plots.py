"""The search study's two figures: WER against measured end-to-end latency per method with the budgets
drawn, and where each final model's time goes (encoder vs decoder) per method and budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from speechprune.figures import save_png

MARKERS = {"uniform": "^", "macs": "s", "encoder": "D", "end_to_end": "o", "co_tuned": "*", "entropy": "P"}
COLORS = {"uniform": "tab:orange", "macs": "tab:purple", "encoder": "tab:blue", "end_to_end": "tab:red",
          "co_tuned": "tab:green", "entropy": "tab:brown"}  # fmt: skip


def _style(method: str) -> dict[str, str]:
    """The same marker and colour for a method in every panel ("uniform (encoder)" as uniform, hollow)."""
    base = method.split(" ")[0]
    style = {"marker": MARKERS.get(base, "x"), "color": COLORS.get(base, "tab:gray")}
    if base != method:
        style["markerfacecolor"] = "none"
    return style


def _decoders(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["decoder"] for r in rows})


def plot_wer_vs_latency(rows: list[dict[str, Any]], budgets: list[float], test: str, out: Path) -> Path:
    """Test WER against the final models' measured end-to-end latency (fraction of the unpruned model,
    each run's own check), one panel per decoder setting, the fractional budgets as dotted lines."""
    decoders = _decoders(rows)
    figure, axes = plt.subplots(
        1, max(1, len(decoders)), figsize=(6.2 * max(1, len(decoders)), 4.6), squeeze=False
    )
    for axis, decoder in zip(axes[0], decoders, strict=False):
        met = [r for r in rows if r["decoder"] == decoder and r["met"] and f"wer_{test}" in r]
        for method in sorted({r["method"] for r in met}):
            points = sorted(
                (r["end_to_end_ratio"], 100 * r[f"wer_{test}"]) for r in met if r["method"] == method
            )
            axis.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                **_style(method),
                markersize=9,
                linestyle="-",
                linewidth=0.8,
                label=method,
            )
        for budget in budgets:
            axis.axvline(budget, color="red", linestyle=":", linewidth=1)
        settings = next((r["decoder_settings"] for r in met), "")
        axis.set_title(f"decoder '{decoder}' ({settings})", fontsize=9)
        axis.set_xlabel("measured end-to-end latency / unpruned (encoder + decoder)")
        axis.set_ylabel(f"WER on {test} (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("Search study: accuracy at each budget (dotted), measured after the final fine-tune")
    return save_png(figure, out / "study_wer_vs_latency.png")


def plot_time_breakdown(rows: list[dict[str, Any]], out: Path) -> Path:
    """Encoder and decoder time of every final model as fractions of the unpruned model's end-to-end time
    measured in the same run (runs were measured at different times: only ratios compare), grouped by
    budget, one panel per decoder setting: a method whose decoder bar grew spent encoder savings there."""
    decoders = _decoders(rows)
    figure, axes = plt.subplots(
        len(decoders) or 1, 1, figsize=(11.0, 3.6 * max(1, len(decoders))), squeeze=False
    )
    for axis, decoder in zip(axes[:, 0], decoders, strict=False):
        met = sorted(
            (r for r in rows if r["decoder"] == decoder and r["met"]),
            key=lambda r: (-r["budget_value"], r["method"]),
        )
        labels = [f"{r['budget']}\n{r['method']}" for r in met]
        shares = [r["end_to_end_ratio"] / (r["encoder_ms"] + r["decoder_ms"]) for r in met]
        encoder = [r["encoder_ms"] * k for r, k in zip(met, shares, strict=True)]
        decoder_time = [r["decoder_ms"] * k for r, k in zip(met, shares, strict=True)]
        axis.bar(labels, encoder, label="encoder")
        axis.bar(labels, decoder_time, bottom=encoder, label="decoder")
        for budget in sorted({r["budget_value"] for r in met}):
            axis.axhline(budget, color="red", linestyle=":", linewidth=1)
        axis.set_ylabel("fraction of unpruned end-to-end")
        axis.set_title(f"decoder '{decoder}': where the time goes", fontsize=9)
        axis.tick_params(axis="x", labelsize=7)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=8)
    return save_png(figure, out / "study_breakdown.png")


def write_study_plots(rows: list[dict[str, Any]], study: Any, out: Path) -> list[Path]:
    budgets = [float(b) for b in study.budgets if isinstance(b, int | float)]
    tests = sorted({k[4:] for r in rows for k in r if k.startswith("wer_") and k != "wer_calibration"})
    test = "test" if "test" in tests else (tests[0] if tests else "calibration")
    return [plot_wer_vs_latency(rows, budgets, test, out), plot_time_breakdown(rows, out)]
