"""A pruning run from a config: a trained model, a criterion, a schedule, an optional output-sharpness
regularizer, and Lightning fine-tuning, resumable from ``EXP_DIR/checkpoints/last.ckpt``.

Config sections (YAML, overridable with ``--set``): ``data``, ``augment``, ``optim`` and ``trainer`` as
for training; ``prune`` (criterion, groups, schedule, snapshots, seed); ``vib`` (kl_weight, for the vib
criterion); ``regularizer`` (:class:`pruning.regularizers.SharpnessRegularizerConfig`).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from asr.config import build_section, check_keys
from asr.data.datamodule import SpeechDataModule
from asr.lightning_module import CTCModule
from asr.training import RUN_SECTIONS, build_trainer, fit_resuming, latest_checkpoint, start_run
from common.errors import SpeechpruneError
from common.fileio import write_json
from pruning.callback import StructuredPruning
from pruning.criteria import make_criterion
from pruning.regularizers import SharpnessRegularizer, SharpnessRegularizerConfig
from pruning.schedules import ScheduleConfig, total_epochs
from pruning.vib import VIBKLTerm, add_unit_gates

SNAPSHOT_DIR = "snapshots"
PRUNE_SECTIONS = (*RUN_SECTIONS, "prune", "vib", "regularizer")
PRUNE_KEYS = ("criterion", "schedule", "groups", "snapshots", "seed")


def prune(config: dict[str, Any], base_model: str | Path, exp_dir: str | Path) -> Path:
    """Prune ``base_model`` as ``config`` says; returns the folder of snapshot models."""
    exp_dir = Path(exp_dir)
    check_keys(config, PRUNE_SECTIONS, "prune config")
    section = dict(config.get("prune") or {})
    check_keys(section, PRUNE_KEYS, "config section 'prune'")
    check_keys(config.get("vib") or {}, ("kl_weight",), "config section 'vib'")
    sections = start_run(config)
    schedule = build_section(section, "schedule", ScheduleConfig)
    criterion = make_criterion(str(section.get("criterion", "mnp")), seed=int(section.get("seed", 0)))
    module = CTCModule.from_model_file(base_model, **sections.module_options())
    regularizer = build_section(
        config, "regularizer", SharpnessRegularizerConfig, blank_id=module.tokenizer.blank_id
    ).with_teacher(base_model)  # distillation matches the unpruned model the run starts from
    if criterion.name == "vib":
        module.recognizer.encoder = add_unit_gates(module.recognizer.encoder)
        kl_weight = float((config.get("vib") or {}).get("kl_weight", 0.05))
        module.add_loss_term("vib_kl", VIBKLTerm(module, kl_weight))

    pruning = StructuredPruning(
        criterion,
        schedule,
        groups=list(section.get("groups", ["lstm"])),
        snapshot_dir=exp_dir / SNAPSHOT_DIR,
        snapshot_sparsities=[float(s) for s in section.get("snapshots", [schedule.target])],
    )
    # only the latest epoch (last.ckpt, for resuming): "best" makes no sense across sparsities
    checkpoints = latest_checkpoint(exp_dir)
    epochs = total_epochs(schedule)
    trainer_options = config.get("trainer") or {}
    if trainer_options.get("max_epochs") not in (None, epochs):
        raise SpeechpruneError(
            f"trainer.max_epochs={trainer_options['max_epochs']}: a pruning run's length is set by "
            f"prune.schedule ({epochs} epochs); leave trainer.max_epochs unset"
        )
    trainer = build_trainer(
        config, exp_dir, [checkpoints, pruning, SharpnessRegularizer(regularizer)], max_epochs=epochs
    )
    datamodule = SpeechDataModule(
        sections.data, module.tokenizer, module.recognizer.sample_rate, sections.augment
    )
    started = time.perf_counter()
    resumed_from = fit_resuming(trainer, module, datamodule, exp_dir)
    if trainer.is_global_zero:
        write_json(
            exp_dir / "prune_summary.json",
            {
                "base_model": str(base_model),
                "seed": int(config.get("seed", 0)),  # tells seeds of one study apart
                "data_seed": int((config.get("data") or {}).get("seed", 0)),  # the batch order's
                "criterion": criterion.name,
                "schedule": asdict(schedule),
                "regularizer": asdict(regularizer),
                "events": pruning.history,
                "snapshots": pruning.snapshots,
                "train_seconds_this_run": round(time.perf_counter() - started, 1),
                "resumed_from": resumed_from,
            },
        )
    return exp_dir / SNAPSHOT_DIR
