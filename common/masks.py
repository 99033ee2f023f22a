"""The valid-frame mask of a padded batch, written once for features, entropy, regularizers and criteria."""

from __future__ import annotations

import torch
from torch import Tensor


def valid_frame_mask(lengths: Tensor, frames: int) -> Tensor:
    """(batch, frames) bool mask, True where frame index < the utterance's length; on ``lengths``' device."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]
