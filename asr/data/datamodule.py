"""Lightning data module: manifests -> length-bucketed, padded batches (augmented for training only)."""

from __future__ import annotations

from dataclasses import dataclass, field

import lightning as L
from torch.utils.data import DataLoader

from asr.augment import AugmentConfig, WaveformAugmenter
from asr.data.dataset import SpeechDataset, check_audio_files, collate
from asr.data.manifest import Utterance, read_manifest
from asr.data.sampler import BucketBatchSampler
from asr.tokenizer import Tokenizer


@dataclass
class DataConfig:
    """Where the data is and how it is batched. ``max_duration`` drops overlong training utterances;
    ``sorted_epochs`` feeds the first training epochs shortest batch first (SortaGrad, see the sampler)."""

    train_manifests: list[str] = field(default_factory=list)
    valid_manifest: str = ""
    max_batch_seconds: float = 100.0
    max_batch_size: int = 64
    max_duration: float = 30.0
    num_workers: int = 1
    seed: int = 0
    sorted_epochs: int = 0


class SpeechDataModule(L.LightningDataModule):
    def __init__(
        self, config: DataConfig, tokenizer: Tokenizer, sample_rate: int, augment: AugmentConfig | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.sample_rate = sample_rate
        self.augment = augment
        self.train_utterances: list[Utterance] = []
        self.valid_utterances: list[Utterance] = []
        self._resumed_epoch = 0
        self.validates = True  # False: no validation set (fits run with trainer.limit_val_batches=0)

    @classmethod
    def from_utterances(
        cls,
        train: list[Utterance],
        config: DataConfig,
        tokenizer: Tokenizer,
        sample_rate: int,
        augment: AugmentConfig | None = None,
    ) -> SpeechDataModule:
        """Training data given as utterances, not manifests (self-adaptation's machine transcripts, of
        files the caller has just read, so not checked again); no validation set."""
        module = cls(config, tokenizer, sample_rate, augment)
        module.train_utterances = [u for u in train if u.duration <= config.max_duration]
        module.validates = False
        return module

    def setup(self, stage: str | None = None) -> None:
        self._resumed_epoch = 0  # a fit that resumes sets it again from its checkpoint, after this
        # A datamodule reused across fits (the latency search fine-tunes many candidates) reads and checks
        # its manifests once.
        if stage in (None, "fit") and not self.train_utterances:
            self.train_utterances = [
                u
                for manifest in self.config.train_manifests
                for u in read_manifest(manifest)
                if u.duration <= self.config.max_duration
            ]
            check_audio_files(
                self.train_utterances, "training manifests " + ", ".join(self.config.train_manifests)
            )
        if stage in (None, "fit", "validate") and self.validates and not self.valid_utterances:
            self.valid_utterances = read_manifest(self.config.valid_manifest)
            check_audio_files(self.valid_utterances, self.config.valid_manifest)

    def state_dict(self) -> dict[str, int]:
        """Saved in every checkpoint: the epoch whose batches a fit resumed from it draws first."""
        return {"next_train_epoch": self._train_epoch()} if self.trainer is not None else {}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resumed_epoch = int(state.get("next_train_epoch", 0))

    def _train_epoch(self) -> int:
        """The epoch whose batches the training sampler draws now.

        Lightning counts an epoch as processed once its batches are spent, so the count is the epoch to
        draw (it tells samplers the same). A resumed fit draws its first batches while its step estimate
        is made, before Lightning restores its loops from the checkpoint; the epoch this module restored
        from that checkpoint, earlier, stands in until then.
        """
        return max(self.trainer.fit_loop.epoch_progress.current.processed, self._resumed_epoch)

    def _loader(self, utterances: list[Utterance], train: bool) -> DataLoader:
        augment = WaveformAugmenter(self.augment, self.sample_rate) if (train and self.augment) else None
        trainer = self.trainer
        sampler = BucketBatchSampler(
            [u.duration for u in utterances],
            max_batch_seconds=self.config.max_batch_seconds,
            max_batch_size=self.config.max_batch_size,
            shuffle=train,
            seed=self.config.seed,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            even_ranks=train,  # validation: every utterance once (see BucketBatchSampler)
            sorted_epochs=self.config.sorted_epochs if train else 0,
            # a new order every epoch, the right one when a fit resumes (see BucketBatchSampler._epoch)
            epoch_source=self._train_epoch if (train and trainer) else None,
        )
        return DataLoader(
            SpeechDataset(utterances, self.tokenizer, self.sample_rate, augment),
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_utterances, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.valid_utterances, train=False)
