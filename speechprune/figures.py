"""Saving report figures: one place that writes a matplotlib figure as a PNG, atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common.fileio import atomic_open  # noqa: E402


def save_png(figure: plt.Figure, path: Path, dpi: int = 120) -> Path:
    """Lay out ``figure``, write it to ``path`` (never a half-written PNG) and free it."""
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=dpi)
    plt.close(figure)
    return path
