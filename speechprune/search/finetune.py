"""Brief fine-tuning of search candidates with Lightning, on one datamodule read once for the whole search.

A candidate is scored only after it has recovered from its surgery for ``batches`` steps (with the
output-sharpness regularizer when its weight is > 0), because pruning changes the emissions and the
decoder's cost is measured on the emissions the candidate will really produce. Each fine-tune is seeded
by the candidate, so a resumed search redoes an interrupted one identically.

Fine-tunes dominate a search's cost, and searches that differ only in how they *measure* (another decoder,
another objective, co-tuning) walk through many of the same candidates. With a cache folder, a fine-tune
is stored under a digest of everything that decides its result (the input model's content digest, the
batch count, the seed and the training sections) and reused when the same fine-tune is asked for again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L

from asr.checkpoint import model_digest, save_model
from asr.config import build_section
from asr.data.datamodule import SpeechDataModule
from asr.lightning_module import CTCModule
from asr.tokenizer import Tokenizer
from asr.training import start_run
from common.fileio import atomic_open
from pruning.regularizers import SharpnessRegularizer, SharpnessRegularizerConfig

# What decides a fine-tune's result besides its input model, batch count and seed.
TRAINING_SECTIONS = ("data", "augment", "optim", "model", "regularizer", "trainer", "threads")

# Trainer options a search owns: its fine-tunes are step-bounded and leave no checkpoints behind.
OWNED_TRAINER_OPTIONS = ("max_steps", "max_epochs", "logger", "enable_checkpointing", "limit_val_batches")


def candidate_seed(base_seed: int, candidate_id: str) -> int:
    """A stable seed per candidate (Python's hash() of a str changes between processes)."""
    return (base_seed * 1_000_003 + zlib.crc32(candidate_id.encode())) % (2**31)


class FineTuner:
    """Fine-tunes model files for a number of batches: ``tuner(model_in, model_out, batches, seed)``;
    with ``cache_dir``, a fine-tune already done (by this search or another) is copied, not redone.
    ``teacher`` is the model a distillation regularizer matches (the search's unpruned model)."""

    def __init__(
        self,
        config: dict[str, Any],
        tokenizer: Tokenizer,
        sample_rate: int,
        cache_dir: Path | None = None,
        teacher: Path | None = None,
    ) -> None:
        self.sections = start_run(config)
        # what a worker elsewhere needs to build the same fine-tuner (speechprune.search.scale_out; the
        # teacher travels as self.regularizer.teacher)
        self.config, self.tokenizer, self.sample_rate = config, tokenizer, sample_rate
        self.cache_dir = Path(cache_dir) if cache_dir else None
        training = {k: config.get(k) for k in TRAINING_SECTIONS}
        self.training_key = json.dumps(training, sort_keys=True, default=str)
        self.regularizer = build_section(config, "regularizer", SharpnessRegularizerConfig)
        if teacher is not None:
            self.regularizer = self.regularizer.with_teacher(teacher)
        trainer = dict(config.get("trainer") or {})
        clashing = sorted(set(trainer) & set(OWNED_TRAINER_OPTIONS))
        if clashing:
            raise ValueError(
                f"trainer.{clashing[0]} is set by the search (search.finetune_batches); remove it"
            )
        self.trainer_options = trainer
        self.datamodule = SpeechDataModule(self.sections.data, tokenizer, sample_rate, self.sections.augment)

    def __call__(self, model_in: Path, model_out: Path, batches: int, seed: int) -> None:
        entry = self.cache_entry(model_in, batches, seed)
        if entry is not None and entry.is_file():
            copy_model(entry, Path(model_out))
            return
        self.train(model_in, model_out, batches, seed)
        if entry is not None:
            copy_model(Path(model_out), entry)

    def train(self, model_in: Path, model_out: Path, batches: int, seed: int) -> None:
        """The fine-tune itself, cache aside (what a Ray worker runs)."""
        module = CTCModule.from_model_file(model_in, **self.sections.module_options())
        L.seed_everything(seed, workers=True, verbose=False)
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

    def cache_entry(self, model_in: Path, batches: int, seed: int) -> Path | None:
        """Where this fine-tune's result is (or will be) cached; None without a cache folder, or for a
        fine-tune of no batches (a copy)."""
        if self.cache_dir is None or batches <= 0:
            return None
        module = CTCModule.from_model_file(model_in, **self.sections.module_options())
        key = json.dumps(
            [model_digest(module.recognizer, module.tokenizer), batches, seed, self.training_key]
        )
        return self.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"


def copy_model(source: Path, destination: Path) -> None:
    """Copy a model file atomically (a killed copy never leaves a half-written cache entry)."""
    with open(source, "rb") as reader, atomic_open(destination, "wb") as writer:
        shutil.copyfileobj(reader, writer)
