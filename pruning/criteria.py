"""Importance criteria: which units of a group matter least.

A criterion has one job: score every unit of every prunable group (higher = more important). Selecting
how many to drop is the schedule's job (:func:`pruning.selection.keep_top_units`). Data-driven criteria
receive a calibration batch of encoder inputs through :class:`PruningContext`; weight-only ones ignore it.
Add a criterion by subclassing :class:`Criterion` and registering it in ``CRITERIA``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from asr.models.lstm_ctc import GATES_PER_UNIT, LSTMCTCEncoder
from common.errors import SpeechpruneError
from common.masks import valid_frame_mask
from pruning.structure import unit_groups
from pruning.vib import gates_of

Scores = dict[str, Tensor]  # group -> (directions, units) importance, higher = keep


@dataclass
class PruningContext:
    """What a criterion may use besides the weights.

    Attributes:
        event: index of the pruning event (seeds random choices, so a resumed run repeats them).
        features: a calibration batch of encoder inputs (batch, frames, input_dim), or None.
        lengths: valid frames of ``features``.
    """

    event: int = 0
    features: Tensor | None = None
    lengths: Tensor | None = None


class Criterion(ABC):
    name: str = ""
    needs_data: bool = False

    @abstractmethod
    def scores(self, encoder: LSTMCTCEncoder, context: PruningContext) -> Scores:
        """Importance of every unit of every group of ``encoder``."""


class MagnitudeCriterion(Criterion):
    """MNP: the L1 norm of a unit's weights in all four LSTM gates (W_ih and W_hh rows); for a conv
    channel, the L1 norm of its filter."""

    name = "mnp"

    @torch.no_grad()
    def scores(self, encoder: LSTMCTCEncoder, context: PruningContext) -> Scores:
        result: Scores = {
            f"conv.{i}": conv.weight.abs().sum(dim=(1, 2, 3))[None]
            for i, conv in enumerate(encoder.conv_layers())
        }
        for i, hidden in enumerate(encoder.config.lstm_hidden):
            per_direction = []
            for d in range(encoder.config.directions):
                w_ih = encoder.lstm_parameter(i, "weight_ih_l0", d)
                w_hh = encoder.lstm_parameter(i, "weight_hh_l0", d)
                rows = torch.cat([w_ih, w_hh], dim=1).abs().sum(dim=1)  # (4 * hidden,)
                per_direction.append(rows.reshape(GATES_PER_UNIT, hidden).sum(dim=0))
            result[f"lstm.{i}"] = torch.stack(per_direction)
        return result


class RandomCriterion(Criterion):
    """The control: uniform random scores, seeded by the event so that a resumed run prunes alike."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def scores(self, encoder: LSTMCTCEncoder, context: PruningContext) -> Scores:
        generator = torch.Generator().manual_seed(self.seed * 1000 + context.event)
        return {
            name: torch.rand(directions, units, generator=generator)
            for name, (directions, units) in unit_groups(encoder).items()
        }


class VIBCriterion(Criterion):
    """VIBNet: a unit's gate signal-to-noise log(mu^2 / sigma^2); conv channels have no gates."""

    name = "vib"

    @torch.no_grad()
    def scores(self, encoder: LSTMCTCEncoder, context: PruningContext) -> Scores:
        gates = gates_of(encoder)
        if not gates:
            raise SpeechpruneError("the vib criterion needs an encoder with VIB gates (model.unit_gates=vib)")
        directions = encoder.config.directions
        return {f"lstm.{i}": gate.log_snr().reshape(directions, -1) for i, gate in enumerate(gates)}


class EnergyCriterion(Criterion):
    """Energy-aware pruning (Yeom et al. 2021): the nuclear norm of a unit's feature map over a batch.

    For an LSTM unit the feature map is its output over (utterance, frame) of the calibration batch; for a
    conv channel, per utterance its (frame, frequency) map (its own frames; padding is zero), nuclear
    norms averaged over utterances. A unit whose output is constant zero scores 0.
    """

    name = "energy"
    needs_data = True

    @torch.no_grad()
    def scores(self, encoder: LSTMCTCEncoder, context: PruningContext) -> Scores:
        if context.features is None or context.lengths is None:
            raise SpeechpruneError("the energy criterion needs a calibration batch")
        result: Scores = {}
        features, lengths = context.features, context.lengths  # the LSTMs' input when there is no conv
        for i, (hidden, conv_lengths) in enumerate(encoder.frontend.conv_outputs(features, context.lengths)):
            result[f"conv.{i}"] = torch.linalg.matrix_norm(hidden, ord="nuc").mean(dim=0)[None]
            # the convs run once: the last one's output feeds the LSTMs
            features, lengths = encoder.frontend.flatten(hidden), conv_lengths
        lengths = lengths.clamp(min=1, max=features.shape[1])
        mask = valid_frame_mask(lengths, features.shape[1]).to(features.dtype)
        directions = encoder.config.directions
        for i, hidden in enumerate(encoder.lstm_outputs(features, lengths)):
            maps = (hidden * mask[..., None]).permute(2, 0, 1)  # (units, batch, frames)
            result[f"lstm.{i}"] = torch.linalg.matrix_norm(maps, ord="nuc").reshape(directions, -1)
        return result


CRITERIA: dict[str, type[Criterion]] = {
    c.name: c for c in (MagnitudeCriterion, RandomCriterion, VIBCriterion, EnergyCriterion)
}


def make_criterion(name: str, seed: int = 0) -> Criterion:
    if name not in CRITERIA:
        raise SpeechpruneError(f"unknown pruning criterion {name!r}; choose one of {', '.join(CRITERIA)}")
    return RandomCriterion(seed) if name == "random" else CRITERIA[name]()
