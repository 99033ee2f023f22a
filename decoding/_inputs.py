"""Validation of the (log_probs, lengths) pair that every decoding entry point takes.

Kept in one place so that greedy decoding, beam search and the entropy statistics reject the same
malformed inputs with the same messages instead of failing deep inside an indexing expression.

Emissions may be numpy arrays (the exported model on a device, where torch is not installed) or torch
tensors (training and the host); this module reads both without importing torch, and the decoders turn
either into numpy with :func:`as_array` before searching.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _is_tensor(values: Any) -> bool:
    return hasattr(values, "detach") and hasattr(values, "is_floating_point")


def as_array(values: Any, dtype: type | None = None) -> np.ndarray:
    """A numpy array of ``values`` (an array, or a torch tensor on any device; torch is not imported).

    ``dtype`` converts floating point values (None keeps the dtype).
    """
    if _is_tensor(values):
        values = values.detach()
        if values.is_floating_point() and values.element_size() < 4:
            values = values.float()  # numpy has no bfloat16
        values = values.cpu().numpy()
    return np.asarray(values) if dtype is None else np.asarray(values, dtype=dtype)


def _is_array(values: Any) -> bool:
    return isinstance(values, np.ndarray) or _is_tensor(values)


def _is_floating(values: Any) -> bool:
    if _is_tensor(values):
        return bool(values.is_floating_point())
    return np.issubdtype(values.dtype, np.floating)


def check_emissions(log_probs: Any, lengths: Any) -> list[int]:
    """Check shapes and ranges of batched emissions and return the valid lengths as Python ints.

    ``log_probs`` must be (batch, frames, vocab) floating point; ``lengths`` must be (batch,) integers in
    ``[0, frames]``, both numpy arrays or torch tensors. Returning plain ints lets callers slice without
    further array ops.
    """
    if not _is_array(log_probs) or len(log_probs.shape) != 3:
        shape = tuple(log_probs.shape) if _is_array(log_probs) else type(log_probs).__name__
        raise ValueError(f"log_probs must be a (batch, frames, vocab) array, got {shape}")
    if not _is_floating(log_probs):
        raise ValueError(f"log_probs must be floating point, got {log_probs.dtype}")
    if not _is_array(lengths) or len(lengths.shape) != 1 or lengths.shape[0] != log_probs.shape[0]:
        shape = tuple(lengths.shape) if _is_array(lengths) else type(lengths).__name__
        raise ValueError(f"lengths must be a ({log_probs.shape[0]},) array, got {shape}")
    integers = as_array(lengths)
    if not np.issubdtype(integers.dtype, np.integer):
        raise ValueError(f"lengths must be integers, got {lengths.dtype}")
    values = [int(v) for v in integers.tolist()]
    frames = log_probs.shape[1]
    bad = [v for v in values if v < 0 or v > frames]
    if bad:
        raise ValueError(f"lengths must lie in [0, {frames}], got {bad[0]}")
    return values


def check_blank_id(blank_id: int, vocab: int) -> None:
    """Reject a blank id outside the vocabulary, which would otherwise silently decode blanks as tokens."""
    if not 0 <= blank_id < vocab:
        raise ValueError(f"blank_id must lie in [0, {vocab}), got {blank_id}")
