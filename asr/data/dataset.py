"""Utterances from manifests as (waveform, unit ids) pairs, checked up front so bad files are named early."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from asr.audio import audio_duration, load_audio
from asr.data.manifest import Utterance
from asr.tokenizer import Tokenizer
from common.errors import AudioError, ManifestError


@dataclass
class Batch:
    """Padded waveforms and targets of one batch, with the lengths that mask the padding."""

    waveforms: torch.Tensor  # (batch, samples)
    waveform_lengths: torch.Tensor  # (batch,)
    targets: torch.Tensor  # (batch, max_units), padded with 0 (blank, never a target)
    target_lengths: torch.Tensor  # (batch,)
    indices: list[int]


class SpeechDataset(Dataset):
    """Loads, resamples and (for training) augments one utterance at a time."""

    def __init__(
        self,
        utterances: Sequence[Utterance],
        tokenizer: Tokenizer,
        sample_rate: int,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.utterances = list(utterances)
        self.tokenizer = tokenizer
        self.sample_rate = sample_rate
        self.augment = augment

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        utterance = self.utterances[index]
        waveform = load_audio(utterance.audio_filepath, self.sample_rate)
        if self.augment is not None:
            waveform = self.augment(waveform)
        return waveform, torch.tensor(self.tokenizer.encode(utterance.text), dtype=torch.long), index


def collate(items: list[tuple[torch.Tensor, torch.Tensor, int]]) -> Batch:
    waveforms, targets, indices = zip(*items, strict=True)
    return Batch(
        waveforms=torch.nn.utils.rnn.pad_sequence(list(waveforms), batch_first=True),
        waveform_lengths=torch.tensor([w.shape[0] for w in waveforms]),
        targets=torch.nn.utils.rnn.pad_sequence(list(targets), batch_first=True),
        target_lengths=torch.tensor([t.shape[0] for t in targets]),
        indices=list(indices),
    )


def check_audio_files(utterances: Sequence[Utterance], source: str) -> None:
    """Read every file's header once; raise one ManifestError naming all unusable files of ``source``.

    Doing it before training starts turns a crash deep inside a data-loader worker, hours in, into a
    clear list of files to fix.
    """
    problems = []
    for utterance in utterances:
        try:
            audio_duration(utterance.audio_filepath)
        except AudioError as error:
            problems.append(str(error))
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ManifestError(f"{source}: {len(problems)} unusable audio file(s):\n  {shown}{more}")
