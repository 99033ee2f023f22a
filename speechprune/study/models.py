"""Which models a study measures: the unpruned baseline, every snapshot of the given pruning runs and any
other model files, each on one or more runtimes (torch, or the exported ONNX encoder in float32 / int8)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from asr.models.lstm_ctc import EncoderConfig
from asr.onnx_model import RUNTIMES
from common.errors import SpeechpruneError

REGULARIZER_TAGS = {"frame_entropy": "ent", "nonblank_entropy": "nbent", "tail_mass": "tail"}
# Labels of the variants on a runtime other than torch end in "@runtime".


@dataclass(frozen=True)
class StudyModel:
    """A model in the study and where it came from."""

    label: str
    path: Path
    method: str  # "unpruned" or the criterion
    regularizer_weight: float
    target_sparsity: float
    regularizer: str = "none"  # the regularizer's kind, "none" when its weight is 0
    runtime: str = "torch"  # one of RUNTIMES
    seed: int | None = None  # the pruning run's seed (None: not a pruning run, or a summary without it)


def collect_models(
    baseline: Path,
    run_dirs: Sequence[Path],
    model_files: Sequence[Path] = (),
    runtimes: Sequence[str] = ("torch",),
    sparsities: Sequence[float] | None = None,
) -> list[StudyModel]:
    """The unpruned baseline, every snapshot of every pruning run (``prune_summary.json`` each; only
    those at ``sparsities`` when given) and every model file (method "model", labelled by its file name),
    on each of ``runtimes``."""
    unknown = sorted(set(runtimes) - set(RUNTIMES))
    if unknown or not runtimes:
        raise SpeechpruneError(f"runtimes {unknown or '(none)'}: choose from {', '.join(RUNTIMES)}")
    models = [StudyModel("unpruned", Path(baseline), "unpruned", 0.0, 0.0)]
    for run in map(Path, run_dirs):
        summary_path = run / "prune_summary.json"
        if not summary_path.is_file():
            raise SpeechpruneError(f"{summary_path}: missing; has the pruning run in {run} finished?")
        summary = json.loads(summary_path.read_text())
        weight = float(summary["regularizer"]["weight"])
        kind = summary["regularizer"]["kind"] if weight > 0 else "none"
        regularizer = f"{REGULARIZER_TAGS.get(kind, kind)}{weight:g}" if weight > 0 else "vanilla"
        snapshots = summary["snapshots"]
        if sparsities is not None:
            snapshots = [s for s in snapshots if any(abs(s["sparsity"] - x) < 1e-6 for x in sparsities)]
            if not snapshots:
                have = ", ".join(f"{s['sparsity']:g}" for s in summary["snapshots"])
                raise SpeechpruneError(
                    f"{run}: no snapshot at --sparsities {list(sparsities)} (it has {have})"
                )
        for snapshot in snapshots:
            tag = f"{summary['criterion']}-{regularizer}-s{round(snapshot['sparsity'] * 100):02d}"
            path = run / "snapshots" / snapshot["path"]
            models.append(
                StudyModel(
                    tag,
                    path,
                    summary["criterion"],
                    weight,
                    snapshot["sparsity"],
                    kind,
                    seed=summary.get("seed"),
                )
            )
    for path in map(Path, model_files):
        if not path.is_file():
            raise SpeechpruneError(f"{path}: no such model file")
        models.append(StudyModel(path.stem, path, "model", 0.0, 0.0))
    models = _seeds_told_apart(models)
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise SpeechpruneError(
            f"two models are labelled alike ({sorted(labels)}): rename a model file, or give a repeated "
            "pruning run another seed"
        )
    return [
        replace(m, label=m.label if runtime == "torch" else f"{m.label}@{runtime}", runtime=runtime)
        for runtime in runtimes
        for m in models
    ]


def _seeds_told_apart(models: list[StudyModel]) -> list[StudyModel]:
    """Runs that differ only in their seed (a study repeated to know its spread) share a tag: those get
    ``-seedN`` appended, so that every other study keeps its short labels."""
    count = Counter(m.label for m in models)
    return [
        replace(m, label=f"{m.label}-seed{m.seed}") if count[m.label] > 1 and m.seed is not None else m
        for m in models
    ]


def encoder_shape(config: EncoderConfig) -> str:
    """What an encoder's latency depends on: its layer widths (weights' values do not change it)."""
    conv = "-".join(map(str, config.conv_channels))
    lstm = "-".join(map(str, config.lstm_hidden))
    return f"conv{conv}_lstm{lstm}_{'bi' if config.bidirectional else 'uni'}"
