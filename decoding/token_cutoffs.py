"""Per-frame token cutoffs, computed with array ops before the beam search loop starts.

The cutoffs (top-n, cumulative probability, minimum log-prob, blank skipping) depend only on the frame's
own distribution, never on the hypotheses, so they are vectorised over all frames at once and handed to
the search as plain Python lists. That keeps numpy out of the per-token hot loop, and it is also where the
encoder's entropy turns into search work: a flatter frame keeps more tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from decoding._inputs import as_array


@dataclass(frozen=True)
class FramePlan:
    """Tokens the search may emit at each frame of one utterance.

    Attributes:
        tokens: per frame, kept token ids, most probable first (empty for skipped frames).
        logps: per frame, the natural-log probabilities of ``tokens``.
        skipped: per frame, True if blank skipping removed the frame from the search.
        blank_logps: per frame, the blank's log-probability (skipped frames still advance blank paths).
    """

    tokens: list[list[int]]
    logps: list[list[float]]
    skipped: list[bool]
    blank_logps: list[float]


def plan_frames(
    log_probs: np.ndarray,
    *,
    blank_id: int,
    cutoff_top_n: int,
    cutoff_prob: float,
    token_min_logp: float | None,
    blank_skip_threshold: float | None,
) -> FramePlan:
    """Apply the cutoffs of ctcdecode, pyctcdecode and WeNet to (frames, vocab) log-probabilities.

    Per frame, tokens are sorted by probability and kept while the probability mass of the more probable
    tokens is below ``cutoff_prob``, at most ``cutoff_top_n`` of them (ctcdecode; ``cutoff_prob`` = 1.0
    leaves only the top-n limit). Tokens with log-probability below ``token_min_logp`` are then dropped,
    except the most probable one (pyctcdecode). The blank is subject to the same cutoffs. A frame whose
    blank probability exceeds ``blank_skip_threshold`` is skipped (WeNet); see the beam search for how
    skipped frames keep repeated tokens apart.
    """
    frames, vocab = log_probs.shape
    values = as_array(log_probs, np.float64)
    top = min(cutoff_top_n, vocab)
    sorted_ids = np.argsort(-values, axis=-1, kind="stable")[:, :top]  # ties: the lower id first
    sorted_logps = np.take_along_axis(values, sorted_ids, axis=-1)
    counts = np.full(frames, top)
    if cutoff_prob < 1.0:
        probs = np.exp(sorted_logps)
        mass_before = np.cumsum(probs, axis=-1) - probs
        counts = np.minimum(counts, (mass_before < cutoff_prob).sum(axis=-1))
    if token_min_logp is not None:
        above = np.maximum((sorted_logps >= token_min_logp).sum(axis=-1), 1)
        counts = np.minimum(counts, above)
    blank_logps = values[:, blank_id]
    if blank_skip_threshold is None:
        skipped = [False] * frames
    else:
        skipped = (np.exp(blank_logps) > blank_skip_threshold).tolist()

    tokens: list[list[int]] = []
    logps: list[list[float]] = []
    for ids, lps, count, skip in zip(
        sorted_ids.tolist(), sorted_logps.tolist(), counts.tolist(), skipped, strict=True
    ):
        tokens.append([] if skip else ids[:count])
        logps.append([] if skip else lps[:count])
    return FramePlan(tokens=tokens, logps=logps, skipped=skipped, blank_logps=blank_logps.tolist())
