"""Sparsity schedules: when to prune and to what sparsity, as a list of pruning events.

Sparsity is the fraction of each group's *original* units removed. Every schedule is a list of events
(epoch, target sparsity); fine-tuning runs between events and for ``final_epochs`` after the last one.

- ``iterative``: MNP's prune -> retrain loop, ``step`` more sparsity per event (the paper: 10% a step).
- ``gradual``: Zhu & Gupta's cubic ramp, s_k = s (1 - (1 - k/n)^3) over ``events`` events, large cuts
  first while many redundant units remain, small ones near the target.
- ``one_shot``: everything at once, then fine-tuning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULE_KINDS = ("iterative", "gradual", "one_shot")


@dataclass(frozen=True)
class PruningEvent:
    epoch: int
    sparsity: float


@dataclass
class ScheduleConfig:
    """Attributes:
    kind: one of ``SCHEDULE_KINDS``.
    target: final sparsity of each pruned group, in [0, 1).
    step: sparsity added per event (iterative).
    events: number of events (gradual).
    start_epoch: epochs of training before the first event (VIBNet's gates learn first).
    epochs_between: fine-tuning epochs after each event before the next one.
    final_epochs: fine-tuning epochs after the last event (>= epochs_between).
    """

    kind: str = "iterative"
    target: float = 0.5
    step: float = 0.1
    events: int = 5
    start_epoch: int = 0
    epochs_between: int = 1
    final_epochs: int = 2

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"prune.schedule.kind must be one of {SCHEDULE_KINDS}, got {self.kind!r}")
        if not 0.0 <= self.target < 1.0:
            raise ValueError(f"prune.schedule.target must lie in [0, 1), got {self.target}")
        if not 0.0 < self.step <= 1.0 or self.events < 1:
            raise ValueError("prune.schedule.step must lie in (0, 1] and prune.schedule.events be >= 1")
        if self.start_epoch < 0 or self.epochs_between < 1 or self.final_epochs < 1:
            raise ValueError("prune.schedule: start_epoch >= 0, epochs_between >= 1, final_epochs >= 1")


def sparsity_steps(config: ScheduleConfig) -> list[float]:
    """Target sparsity after each event, increasing, ending at ``config.target``."""
    if config.target == 0.0:
        return []
    if config.kind == "one_shot":
        return [config.target]
    if config.kind == "iterative":
        count = math.ceil(config.target / config.step - 1e-9)
        return [round(min(config.step * (k + 1), config.target), 6) for k in range(count)]
    n = config.events
    return [round(config.target * (1 - (1 - (k + 1) / n) ** 3), 6) for k in range(n)]


def pruning_events(config: ScheduleConfig) -> list[PruningEvent]:
    return [
        PruningEvent(config.start_epoch + k * config.epochs_between, sparsity)
        for k, sparsity in enumerate(sparsity_steps(config))
    ]


def total_epochs(config: ScheduleConfig) -> int:
    """Epochs the whole schedule needs: events, the fine-tuning between them, and the final fine-tune."""
    events = pruning_events(config)
    if not events:
        return config.start_epoch + config.final_epochs
    return events[-1].epoch + config.final_epochs
