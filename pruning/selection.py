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


def remove_lowest_units(
    encoder: LSTMCTCEncoder, scores: Scores, group: str, count: int, min_units: int = 1
) -> KeepPlan | None:
    """The plan that removes the ``count`` lowest-scoring units of one group (per direction), or None when
    that would leave fewer than ``min_units``: the move of a latency search, which shrinks one layer at a
    time so that layers end up with uneven widths where the search finds them cheapest."""
    directions, units = unit_groups(encoder)[group]
    keep = units - count
    if count < 1 or keep < max(1, min_units):
        return None
    top = scores[group].reshape(directions, units).topk(keep, dim=1).indices.sort(dim=1).values
    return {group: top[0] if group.startswith("conv.") else top}
