"""Brief fine-tuning of search candidates with Lightning, on one datamodule read once for the whole search.

A candidate is scored only after it has recovered from its surgery for ``batches`` steps (with the
output-sharpness regularizer when its weight is > 0), because pruning changes the emissions and the
decoder's cost is measured on the emissions the candidate will really produce. Each fine-tune is seeded
by the candidate, so a resumed search redoes an interrupted one identically.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L

from asr.checkpoint import save_model
from asr.config import build_section
from asr.data.datamodule import SpeechDataModule
from asr.lightning_module import CTCModule
from asr.tokenizer import Tokenizer
from asr.training import start_run
from pruning.regularizers import SharpnessRegularizer, SharpnessRegularizerConfig

# Trainer options a search owns: its fine-tunes are step-bounded and leave no checkpoints behind.
OWNED_TRAINER_OPTIONS = ("max_steps", "max_epochs", "logger", "enable_checkpointing", "limit_val_batches")


def candidate_seed(base_seed: int, candidate_id: str) -> int:
    """A stable seed per candidate (Python's hash() of a str changes between processes)."""
    return (base_seed * 1_000_003 + zlib.crc32(candidate_id.encode())) % (2**31)


class FineTuner:
    """Fine-tunes model files for a number of batches: ``tuner(model_in, model_out, batches, seed)``."""

    def __init__(self, config: dict[str, Any], tokenizer: Tokenizer, sample_rate: int) -> None:
        self.sections = start_run(config)
        self.regularizer = build_section(config, "regularizer", SharpnessRegularizerConfig)
        trainer = dict(config.get("trainer") or {})
        clashing = sorted(set(trainer) & set(OWNED_TRAINER_OPTIONS))
        if clashing:
            raise ValueError(
                f"trainer.{clashing[0]} is set by the search (search.finetune_batches); remove it"
            )
        self.trainer_options = trainer
        self.datamodule = SpeechDataModule(self.sections.data, tokenizer, sample_rate, self.sections.augment)

    def __call__(self, model_in: Path, model_out: Path, batches: int, seed: int) -> None:
        L.seed_everything(seed, workers=True, verbose=False)
        module = CTCModule.from_model_file(model_in, **self.sections.module_options())
        if batches > 0:
            regularizer = replace(self.regularizer, blank_id=module.tokenizer.blank_id)
            owned = {
                "max_steps": batches,
                "max_epochs": -1,
                "logger": False,
                "enable_checkpointing": False,
                "limit_val_batches": 0,
                "num_sanity_val_steps": 0,
                "enable_progress_bar": False,
                "enable_model_summary": False,
                "use_distributed_sampler": False,
                "callbacks": [SharpnessRegularizer(regularizer)],
            }
            trainer = L.Trainer(**{"devices": 1, **self.trainer_options, **owned})
            # a new batch order per candidate: each sees a different slice of the training data
            self.datamodule.config = replace(self.sections.data, seed=seed)
            trainer.fit(module, datamodule=self.datamodule)
        module.recognizer.eval()
        save_model(model_out, module.recognizer, module.tokenizer, metadata={"finetune_batches": batches})
