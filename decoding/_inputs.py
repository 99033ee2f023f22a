"""Validation of the (log_probs, lengths) pair that every decoding entry point takes.

Kept in one place so that greedy decoding, beam search and the entropy statistics reject the same
malformed inputs with the same messages instead of failing deep inside an indexing expression.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_emissions(log_probs: Tensor, lengths: Tensor) -> list[int]:
    """Check shapes and ranges of batched emissions and return the valid lengths as Python ints.

    ``log_probs`` must be (batch, frames, vocab) floating point; ``lengths`` must be (batch,) integers in
    ``[0, frames]``. Returning plain ints lets callers slice without further tensor ops.
    """
    if not isinstance(log_probs, Tensor) or log_probs.dim() != 3:
        shape = tuple(log_probs.shape) if isinstance(log_probs, Tensor) else type(log_probs).__name__
        raise ValueError(f"log_probs must be a (batch, frames, vocab) tensor, got {shape}")
    if not log_probs.is_floating_point():
        raise ValueError(f"log_probs must be floating point, got {log_probs.dtype}")
    if not isinstance(lengths, Tensor) or lengths.dim() != 1 or lengths.shape[0] != log_probs.shape[0]:
        shape = tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ValueError(f"lengths must be a ({log_probs.shape[0]},) tensor, got {shape}")
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be integers, got {lengths.dtype}")
    values = [int(v) for v in lengths.tolist()]
    frames = log_probs.shape[1]
    bad = [v for v in values if v < 0 or v > frames]
    if bad:
        raise ValueError(f"lengths must lie in [0, {frames}], got {bad[0]}")
    return values


def check_blank_id(blank_id: int, vocab: int) -> None:
    """Reject a blank id outside the vocabulary, which would otherwise silently decode blanks as tokens."""
    if not 0 <= blank_id < vocab:
        raise ValueError(f"blank_id must lie in [0, {vocab}), got {blank_id}")
