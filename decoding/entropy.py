"""Per-frame uncertainty of an encoder's output distributions, and how it relates to search size.

Pruning raises the entropy of the per-frame distributions; a frame with entropy H behaves like one with
about exp(H) equally likely tokens, and a beam search with a cumulative-probability cutoff keeps
``tokens_for_mass`` of them. These functions measure both on emissions alone, without decoding, so the
entropy analysis can be checked against the counts the decoder records.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from common.masks import valid_frame_mask
from decoding._inputs import check_blank_id, check_emissions


def _valid_log_probs(log_probs: Tensor, lengths: Tensor) -> list[Tensor]:
    """Per utterance, its valid frames as normalised float64 log-probabilities (padding dropped).

    Re-normalising with log_softmax is a no-op for log_softmax output and makes the entropy well defined
    for inputs that are off by rounding.
    """
    valid = check_emissions(log_probs, lengths)
    values = torch.log_softmax(log_probs.detach().to(device="cpu", dtype=torch.float64), dim=-1)
    return [values[i, :length] for i, length in enumerate(valid)]


def _entropy(log_probs: Tensor) -> Tensor:
    """-sum p log p over the last dimension, with 0 log 0 = 0."""
    terms = log_probs.exp() * log_probs
    return -torch.where(torch.isneginf(log_probs), torch.zeros_like(terms), terms).sum(dim=-1)


def _tokens_for_mass(log_probs: Tensor, mass: float) -> Tensor:
    """Most-probable tokens needed to reach ``mass``: those whose more probable tokens hold less than it.

    This is the rule of the decoder's ``cutoff_prob``, so the counts match what beam search would keep.
    """
    probs = log_probs.exp().sort(dim=-1, descending=True).values
    mass_before = probs.cumsum(dim=-1) - probs
    return (mass_before < mass).sum(dim=-1)


def _check_mass(mass: float) -> None:
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must lie in (0, 1], got {mass!r}")


def mean_frame_entropy(log_probs: Tensor, lengths: Tensor) -> Tensor:
    """Mean entropy (nats) over the valid frames of a batch, differentiable and on the input's device.

    The batched form of :func:`frame_entropy` for training: logged every validation, and the quantity the
    entropy regularizer of decoder-aware pruning penalizes.
    """
    mask = valid_frame_mask(lengths.to(log_probs.device), log_probs.shape[1])
    return (_entropy(log_probs) * mask).sum() / mask.sum().clamp(min=1)


def frame_entropy(log_probs: Tensor, lengths: Tensor) -> list[Tensor]:
    """Shannon entropy in nats of every valid frame, one (length,) float64 tensor per utterance."""
    return [_entropy(frames) for frames in _valid_log_probs(log_probs, lengths)]


def tokens_for_mass(log_probs: Tensor, lengths: Tensor, mass: float) -> list[Tensor]:
    """Per valid frame, how many most-probable tokens reach cumulative probability ``mass`` (int64)."""
    _check_mass(mass)
    return [_tokens_for_mass(frames, mass) for frames in _valid_log_probs(log_probs, lengths)]


def entropy_report(
    log_probs: Tensor, lengths: Tensor, mass: float = 0.95, blank_id: int = 0
) -> dict[str, float | int]:
    """Corpus summary of frame entropy and of the token counts it implies, JSON-ready.

    Non-blank frames (argmax is not the blank) are reported separately because CTC outputs are mostly
    confident blanks, which hide the uncertainty on the frames where labels are emitted.
    ``effective_tokens_mean`` is the mean of exp(entropy), the entropy's own estimate of how many tokens
    a frame spreads over, to set beside ``tokens_for_mass_mean``.
    """
    _check_mass(mass)
    check_blank_id(blank_id, log_probs.shape[2])
    per_utterance = _valid_log_probs(log_probs, lengths)
    frames = torch.cat(per_utterance) if per_utterance else torch.empty(0, log_probs.shape[2])
    if frames.shape[0] == 0:
        raise ValueError("entropy_report needs at least one valid frame")
    entropy = _entropy(frames).numpy()
    counts = _tokens_for_mass(frames, mass).numpy()
    nonblank = (frames.argmax(dim=-1) != blank_id).numpy()
    p50, p90, p99 = np.percentile(entropy, [50, 90, 99])
    return {
        "frames": int(entropy.size),
        "nonblank_frames": int(nonblank.sum()),
        "entropy_mean": float(entropy.mean()),
        "entropy_p50": float(p50),
        "entropy_p90": float(p90),
        "entropy_p99": float(p99),
        "entropy_nonblank_mean": float(entropy[nonblank].mean()) if nonblank.any() else 0.0,
        "effective_tokens_mean": float(np.exp(entropy).mean()),
        "mass": mass,
        "tokens_for_mass_mean": float(counts.mean()),
        "tokens_for_mass_nonblank_mean": float(counts[nonblank].mean()) if nonblank.any() else 0.0,
    }
