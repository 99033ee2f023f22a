"""Turn importance scores into a keep plan: which units each group keeps at a given sparsity."""

from __future__ import annotations

from asr.models.lstm_ctc import LSTMCTCEncoder
from pruning.criteria import Scores
from pruning.structure import KeepPlan, unit_groups


def units_to_keep(original_units: int, sparsity: float) -> int:
    """Units left of ``original_units`` at ``sparsity`` (at least one)."""
    return max(1, round(original_units * (1.0 - sparsity)))


def keep_top_units(
    encoder: LSTMCTCEncoder,
    scores: Scores,
    original: dict[str, tuple[int, int]],
    sparsity: float,
    groups: list[str],
) -> KeepPlan:
    """Per group in ``groups`` and per direction, the highest-scoring units, down to ``sparsity`` of the
    group's original size (uniform per layer: every layer loses the same fraction, as in MNP).

    Indices refer to the encoder's *current* units; a group already at or below its target keeps all.
    """
    current = unit_groups(encoder)
    plan: KeepPlan = {}
    for name in groups:
        if name not in scores:
            raise ValueError(f"the criterion gave no scores for unit group {name}")
        directions, units = current[name]
        keep = min(units, units_to_keep(original[name][1], sparsity))
        top = scores[name].reshape(directions, units).topk(keep, dim=1).indices.sort(dim=1).values
        plan[name] = top[0] if name.startswith("conv.") else top
    return plan
