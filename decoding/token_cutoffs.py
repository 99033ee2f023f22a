"""Per-frame token cutoffs, computed with tensor ops before the beam search loop starts.

The cutoffs (top-n, cumulative probability, minimum log-prob, blank skipping) depend only on the frame's
own distribution, never on the hypotheses, so they are vectorised over all frames at once and handed to
the search as plain Python lists. That keeps torch out of the per-token hot loop, and it is also where the
encoder's entropy turns into search work: a flatter frame keeps more tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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
    log_probs: Tensor,
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
    values = log_probs.detach().to(device="cpu", dtype=torch.float64)
    top = min(cutoff_top_n, vocab)
    sorted_logps, sorted_ids = values.topk(top, dim=-1)
    counts = torch.full((frames,), top, dtype=torch.long)
    if cutoff_prob < 1.0:
        probs = sorted_logps.exp()
        mass_before = probs.cumsum(dim=-1) - probs
        counts = torch.minimum(counts, (mass_before < cutoff_prob).sum(dim=-1))
    if token_min_logp is not None:
        above = (sorted_logps >= token_min_logp).sum(dim=-1).clamp(min=1)
        counts = torch.minimum(counts, above)
    blank_logps = values[:, blank_id]
    if blank_skip_threshold is None:
        skipped = [False] * frames
    else:
        skipped = (blank_logps.exp() > blank_skip_threshold).tolist()

    tokens: list[list[int]] = []
    logps: list[list[float]] = []
    for ids, lps, count, skip in zip(
        sorted_ids.tolist(), sorted_logps.tolist(), counts.tolist(), skipped, strict=True
    ):
        tokens.append([] if skip else ids[:count])
        logps.append([] if skip else lps[:count])
    return FramePlan(tokens=tokens, logps=logps, skipped=skipped, blank_logps=blank_logps.tolist())
