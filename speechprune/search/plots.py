"""Plots of one search: the tree's candidates against the budgets, and where each final model's time goes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from speechprune.figures import save_png


def plot_candidates(results: dict[str, Any], rows: list[dict[str, Any]], out: Path) -> Path:
    """Calibration WER against measured end-to-end latency (fraction of unpruned) of every candidate, the
    kept path, the final models after their fine-tune, and the fractional budgets as vertical lines."""
    figure, axis = plt.subplots(figsize=(7.0, 4.8))
    measured = [r for r in rows if r.get("ratio_end_to_end") is not None and r["wer"] is not None]
    for uniform, style in ((False, {"color": "lightgrey", "edgecolor": "grey"}), (True, {"color": "orange"})):
        chosen = [
            r for r in measured if str(r["id"]).startswith("uniform-s") == uniform and r["id"] != "root"
        ]
        axis.scatter(
            [r["ratio_end_to_end"] for r in chosen],
            [100 * r["wer"] for r in chosen],
            marker="^" if uniform else "o",
            label="uniform pruning (same brief fine-tune)"
            if uniform
            else "search candidates (brief fine-tune)",
            **style,
        )
    for final in results["finals"]:
        axis.scatter(
            [final["end_to_end_ratio"]],
            [100 * final["wer_calibration"]],
            marker="*",
            s=180,
            label=f"{final['method']} for {final['budget']} (final, re-measured)",
        )
    if results["objective"] == "end_to_end":
        for budget in results.get("budget_fractions", []):
            axis.axvline(budget, color="red", linestyle=":", linewidth=1)
    unpruned_wer = 100 * results["unpruned"]["wer_calibration"]
    axis.set_ylim(0, max(4 * unpruned_wer, 5.0))  # a collapsed candidate would flatten everything else
    axis.scatter(
        [1.0],
        [100 * results["unpruned"]["wer_calibration"]],
        color="black",
        marker="P",
        s=120,
        label="unpruned",
    )
    axis.set_xlabel("measured end-to-end latency / unpruned (encoder + decoder, same run)")
    axis.set_ylabel("calibration WER (%)")
    axis.set_title(f"Search ({results['objective']} objective): candidates vs budgets (dotted)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return save_png(figure, out / "search_candidates.png")


def plot_final_breakdown(results: dict[str, Any], out: Path) -> Path:
    """Encoder and decoder milliseconds per utterance of the unpruned model and each budget's model."""
    labels = ["unpruned"] + [f"{f['method']}\n{f['budget']}" for f in results["finals"]]
    encoder = [results["unpruned"]["encoder_ms"]] + [f["encoder_ms"] for f in results["finals"]]
    decoder = [results["unpruned"]["decoder_ms"]] + [f["decoder_ms"] for f in results["finals"]]
    figure, axis = plt.subplots(figsize=(max(5.0, 1.1 * len(labels)), 4.2))
    axis.bar(labels, encoder, label="encoder")
    axis.bar(labels, decoder, bottom=encoder, label="decoder")
    axis.set_ylabel("ms per utterance (calibration set, on the target)")
    axis.set_title("Where the time goes: encoder vs decoder")
    axis.grid(axis="y", alpha=0.3)
    axis.legend()
    return save_png(figure, out / "search_breakdown.png")


def write_search_plots(results: dict[str, Any], rows: list[dict[str, Any]], out: Path) -> list[Path]:
    return [plot_candidates(results, rows, out), plot_final_breakdown(results, out)]
