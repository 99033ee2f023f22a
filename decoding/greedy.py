"""Greedy (best-path) CTC decoding: per-frame argmax, collapse repeats, drop blanks.

It is the cheapest decoder and the one the speech model's validation uses, and it is the reference that
beam search with beam width 1 and no language model must reproduce.
"""

from __future__ import annotations

from typing import Any

from decoding._inputs import as_array, check_blank_id, check_emissions
from decoding.paths import collapse_path


def greedy_decode_with_timesteps(
    log_probs: Any, lengths: Any, blank_id: int = 0
) -> list[tuple[list[int], list[int]]]:
    """Decode each utterance and also return the frame at which each emitted token starts.

    The start frame is the first frame of the run of identical argmax labels that produced the token,
    which is what forced-alignment style consumers (word timings) expect.

    Args:
        log_probs: (batch, frames, vocab) emissions (numpy or torch); any monotone transform of
            probabilities works.
        lengths: (batch,) number of valid frames per utterance.
        blank_id: index of the CTC blank.

    Returns:
        Per utterance, ``(token_ids, start_frames)`` of equal length.
    """
    valid = check_emissions(log_probs, lengths)
    check_blank_id(blank_id, log_probs.shape[2])
    best = as_array(log_probs).argmax(axis=-1).tolist()
    return [collapse_path(path[:length], blank_id) for path, length in zip(best, valid, strict=True)]


def greedy_decode(log_probs: Any, lengths: Any, blank_id: int = 0) -> list[list[int]]:
    """Decode each utterance to token ids by best path (see :func:`greedy_decode_with_timesteps`)."""
    return [tokens for tokens, _ in greedy_decode_with_timesteps(log_probs, lengths, blank_id)]
