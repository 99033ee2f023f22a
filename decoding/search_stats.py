"""Search-space statistics of one beam-search decode: how much work pruning the encoder caused.

Pruning flattens the encoder's per-frame distributions; the decoder then keeps more tokens per frame,
evaluates more prefix extensions and holds more hypotheses, so it slows down. These counts are the
quantity the entropy analysis bounds, so every decode records them per frame and they are reported next
to the error rate rather than inferred from wall time alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PER_FRAME_FIELDS = ("tokens_kept", "extensions", "candidates", "active", "lm_queries", "skipped")


def _as_int32(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.int32).reshape(-1)


def _mean(values: np.ndarray) -> float:
    """Mean that is 0.0 for an empty array, so zero-length utterances give valid JSON numbers."""
    return float(values.mean()) if values.size else 0.0


@dataclass(frozen=True, eq=False)
class SearchStats:
    """Per-frame search counts of one utterance (arrays of int32, one entry per valid frame).

    Attributes:
        tokens_kept: tokens that survived the per-frame cutoffs (blank included; 0 on skipped frames).
        extensions: (prefix, token) pairs evaluated, i.e. incoming hypotheses times tokens kept.
        candidates: distinct prefixes produced by the frame before beam pruning.
        active: hypotheses kept after pruning (beam width, beam threshold).
        lm_queries: language-model calls made while extending prefixes in that frame.
        skipped: 1 where the frame was skipped because its blank probability exceeded the threshold.
        lm_queries_final: LM calls made after the last frame (last word, end of sentence).
        wall_time_s: seconds spent decoding the utterance (time.perf_counter), cutoffs included.
    """

    tokens_kept: np.ndarray
    extensions: np.ndarray
    candidates: np.ndarray
    active: np.ndarray
    lm_queries: np.ndarray
    skipped: np.ndarray
    lm_queries_final: int = 0
    wall_time_s: float = 0.0

    def __post_init__(self) -> None:
        for name in PER_FRAME_FIELDS:
            object.__setattr__(self, name, _as_int32(getattr(self, name)))
        lengths = {name: getattr(self, name).size for name in PER_FRAME_FIELDS}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"per-frame arrays must have equal lengths, got {lengths}")

    @property
    def frames(self) -> int:
        """Valid frames of the utterance."""
        return int(self.skipped.size)

    @property
    def frames_skipped(self) -> int:
        return int(self.skipped.sum())

    @property
    def frames_decoded(self) -> int:
        return self.frames - self.frames_skipped

    @property
    def total_extensions(self) -> int:
        return int(self.extensions.sum(dtype=np.int64))

    @property
    def total_lm_queries(self) -> int:
        return int(self.lm_queries.sum(dtype=np.int64)) + self.lm_queries_final

    def summary(self) -> dict[str, float | int]:
        """Per-utterance scalars. Means of cutoff and extension counts are over decoded frames only,
        because skipped frames do no search; the active-hypothesis mean is over all frames."""
        decoded = self.skipped == 0
        return {
            "frames": self.frames,
            "frames_decoded": self.frames_decoded,
            "frames_skipped": self.frames_skipped,
            "tokens_kept_mean": _mean(self.tokens_kept[decoded]),
            "extensions_total": self.total_extensions,
            "extensions_per_frame": _mean(self.extensions[decoded]),
            "candidates_per_frame": _mean(self.candidates[decoded]),
            "active_mean": _mean(self.active),
            "active_max": int(self.active.max()) if self.active.size else 0,
            "lm_queries_total": self.total_lm_queries,
            "wall_time_s": self.wall_time_s,
        }

    def to_dict(self, per_frame: bool = False) -> dict[str, Any]:
        """JSON-ready row: the summary, plus the per-frame arrays as lists when ``per_frame``."""
        row: dict[str, Any] = dict(self.summary())
        if per_frame:
            for name in PER_FRAME_FIELDS:
                row[name] = getattr(self, name).tolist()
        return row


def aggregate_stats(stats: Sequence[SearchStats]) -> dict[str, float | int]:
    """Corpus-level summary of many utterances, with per-frame means weighted by frames (not utterances).

    Weighting by frames makes the result the average cost of decoding one frame of audio, which is what
    scales the decoder's real-time factor.
    """
    if not stats:
        raise ValueError("stats must hold at least one SearchStats")

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(s, name) for s in stats])

    skipped = cat("skipped")
    decoded = skipped == 0
    active = cat("active")
    wall = float(sum(s.wall_time_s for s in stats))
    frames = int(skipped.size)
    return {
        "utterances": len(stats),
        "frames": frames,
        "frames_decoded": int(decoded.sum()),
        "frames_skipped": int(skipped.sum()),
        "skip_rate": float(skipped.sum()) / frames if frames else 0.0,
        "tokens_kept_mean": _mean(cat("tokens_kept")[decoded]),
        "extensions_total": int(cat("extensions").sum(dtype=np.int64)),
        "extensions_per_frame": _mean(cat("extensions")[decoded]),
        "candidates_per_frame": _mean(cat("candidates")[decoded]),
        "active_mean": _mean(active),
        "active_p90": float(np.percentile(active, 90)) if active.size else 0.0,
        "active_max": int(active.max()) if active.size else 0,
        "lm_queries_total": int(sum(s.total_lm_queries for s in stats)),
        "wall_time_s": wall,
        "ms_per_utterance": 1000.0 * wall / len(stats),
        "ms_per_frame": 1000.0 * wall / frames if frames else 0.0,
    }
