"""Which models a study measures: the unpruned baseline and every snapshot of the given pruning runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from asr.models.lstm_ctc import EncoderConfig
from common.errors import SpeechpruneError

REGULARIZER_TAGS = {"frame_entropy": "ent", "nonblank_entropy": "nbent", "tail_mass": "tail"}


@dataclass(frozen=True)
class StudyModel:
    """A model in the study and where it came from."""

    label: str
    path: Path
    method: str  # "unpruned" or the criterion
    regularizer_weight: float
    target_sparsity: float
    regularizer: str = "none"  # the regularizer's kind, "none" when its weight is 0


def collect_models(baseline: Path, run_dirs: Sequence[Path]) -> list[StudyModel]:
    """The unpruned baseline and every snapshot of every pruning run (``prune_summary.json`` each)."""
    models = [StudyModel("unpruned", Path(baseline), "unpruned", 0.0, 0.0)]
    for run in map(Path, run_dirs):
        summary_path = run / "prune_summary.json"
        if not summary_path.is_file():
            raise SpeechpruneError(f"{summary_path}: missing; has the pruning run in {run} finished?")
        summary = json.loads(summary_path.read_text())
        weight = float(summary["regularizer"]["weight"])
        kind = summary["regularizer"]["kind"] if weight > 0 else "none"
        regularizer = f"{REGULARIZER_TAGS.get(kind, kind)}{weight:g}" if weight > 0 else "vanilla"
        for snapshot in summary["snapshots"]:
            tag = f"{summary['criterion']}-{regularizer}-s{round(snapshot['sparsity'] * 100):02d}"
            path = run / "snapshots" / snapshot["path"]
            models.append(StudyModel(tag, path, summary["criterion"], weight, snapshot["sparsity"], kind))
    return models


def encoder_shape(config: EncoderConfig) -> str:
    """What an encoder's latency depends on: its layer widths (weights' values do not change it)."""
    conv = "-".join(map(str, config.conv_channels))
    lstm = "-".join(map(str, config.lstm_hidden))
    return f"conv{conv}_lstm{lstm}_{'bi' if config.bidirectional else 'uni'}"
