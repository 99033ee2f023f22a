"""Output-sharpness regularizers for decoder-aware pruning, added to the training loss of any criterion
and schedule through :meth:`asr.lightning_module.CTCModule.add_loss_term`.

``frame_entropy`` is the term of Gao et al. (KDD 2020): the mean Shannon entropy of the per-frame output
softmax over valid frames. A beam search with a probability cutoff keeps about exp(H) tokens a frame, so a
lower entropy bounds the search space. Mean entropy is dominated by (easy) blank frames, though, and the
search grows on the uncertain ones; so terms closer to the search are offered beside it:

- ``nonblank_entropy``: the mean entropy over frames whose most probable token is not the blank, where
  the decoder actually branches.
- ``soft_nonblank_entropy``: every frame's entropy weighted by its non-blank probability 1 - p(blank).
  The hard variant can be lowered by turning an uncertain frame's argmax into the blank without making
  it any sharper; the soft weight cannot be dodged that way.
- ``margin``: a hinge on the gap between the best and the second-best non-blank token's log-probability,
  ``max(0, margin - gap)``, weighted by 1 - p(blank): a beam threshold keeps the runner-up only when the
  gap is small, so widening it is what removes hypotheses.
- ``tail_mass``: the mean probability outside each frame's top ``top_k`` tokens, the mass that makes a
  ``cutoff_prob`` decoder try more tokens.
- ``distillation``: the KL divergence from the unpruned model's outputs (the teacher, frozen, on the same
  batch) to the pruned student's, per valid frame. The teacher is exactly as peaked as the decoder's
  budget was set for, so matching it aims at "no slower than unpruned" rather than "as peaked as
  possible"; it is zero when the student equals the teacher.

Every measure is logged unweighted every step (``train_<kind>``) and every validation (``val_<kind>``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from common.masks import valid_frame_mask
from decoding.entropy import mean_frame_entropy

REGULARIZER_KINDS = (
    "frame_entropy",
    "nonblank_entropy",
    "soft_nonblank_entropy",
    "margin",
    "tail_mass",
    "distillation",
)
Measure = Callable[..., Tensor]  # (log_probs, lengths, batch=None) -> scalar; distillation reads the batch


@dataclass
class SharpnessRegularizerConfig:
    """Attributes:
    weight: lambda, the term's weight in the loss (0 = vanilla pruning, the term is still logged).
    warmup_steps: optimizer steps over which lambda ramps linearly from 0 (CTC alignments form first).
    kind: one of ``REGULARIZER_KINDS``.
    top_k: tokens counted as kept by ``tail_mass``.
    blank_id: the CTC blank (``nonblank_entropy``, ``soft_nonblank_entropy``, ``margin``).
    margin: the log-probability gap (nats) ``margin`` asks between the two best non-blank tokens.
    teacher: the model file ``distillation`` matches (the pruning job and the search fill in the
        unpruned model they start from when it is not given).
    """

    weight: float = 0.0
    warmup_steps: int = 0
    kind: str = "frame_entropy"
    top_k: int = 1
    blank_id: int = 0
    margin: float = 3.0
    teacher: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in REGULARIZER_KINDS:
            raise ValueError(f"regularizer.kind must be one of {REGULARIZER_KINDS}, got {self.kind!r}")
        if self.weight < 0 or self.warmup_steps < 0 or self.top_k < 1 or self.margin <= 0:
            raise ValueError(
                "regularizer: weight >= 0, warmup_steps >= 0, top_k >= 1 and margin > 0 are required"
            )

    def with_teacher(self, model_path: str | os.PathLike) -> SharpnessRegularizerConfig:
        """This config, with ``model_path`` as the teacher unless one is set (distillation only)."""
        if self.kind != "distillation" or self.teacher is not None:
            return self
        return SharpnessRegularizerConfig(**{**self.__dict__, "teacher": str(model_path)})


def _valid_frames(log_probs: Tensor, lengths: Tensor) -> Tensor:
    return valid_frame_mask(lengths.to(log_probs.device), log_probs.shape[1])


def _frame_entropy(log_probs: Tensor) -> Tensor:
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def nonblank_entropy(log_probs: Tensor, lengths: Tensor, blank_id: int = 0) -> Tensor:
    """Mean entropy over valid frames whose argmax is not the blank (0 when there are none)."""
    mask = _valid_frames(log_probs, lengths) & (log_probs.argmax(dim=-1) != blank_id)
    return (_frame_entropy(log_probs) * mask).sum() / mask.sum().clamp(min=1)


def _nonblank_weights(log_probs: Tensor, lengths: Tensor, blank_id: int) -> Tensor:
    """Per frame 1 - p(blank) on valid frames, 0 on padding."""
    return (1.0 - log_probs[..., blank_id].exp()) * _valid_frames(log_probs, lengths)


def soft_nonblank_entropy(log_probs: Tensor, lengths: Tensor, blank_id: int = 0) -> Tensor:
    """Entropy averaged over valid frames with weights 1 - p(blank) (0 when every frame is sure blank)."""
    weights = _nonblank_weights(log_probs, lengths, blank_id)
    return (_frame_entropy(log_probs) * weights).sum() / weights.sum().clamp(min=1e-6)


def nonblank_margin(log_probs: Tensor, lengths: Tensor, blank_id: int = 0, margin: float = 3.0) -> Tensor:
    """max(0, margin - (best - second-best non-blank log-probability)), weighted by 1 - p(blank)."""
    others = log_probs.clone()
    others[..., blank_id] = float("-inf")
    top = others.topk(2, dim=-1).values
    hinge = torch.relu(margin - (top[..., 0] - top[..., 1]))
    weights = _nonblank_weights(log_probs, lengths, blank_id)
    return (hinge * weights).sum() / weights.sum().clamp(min=1e-6)


def tail_mass(log_probs: Tensor, lengths: Tensor, top_k: int = 1) -> Tensor:
    """Mean probability outside the ``top_k`` most probable tokens over valid frames."""
    mask = _valid_frames(log_probs, lengths)
    kept = log_probs.topk(min(top_k, log_probs.shape[-1]), dim=-1).values.exp().sum(dim=-1)
    return ((1.0 - kept) * mask).sum() / mask.sum().clamp(min=1)


def distillation_kl(student: Tensor, teacher: Tensor, lengths: Tensor) -> Tensor:
    """Mean over valid frames of KL(teacher || student), both (batch, frames, vocab) log-probabilities."""
    if student.shape != teacher.shape:
        shapes = f"{tuple(teacher.shape)} vs the student's {tuple(student.shape)}"
        raise ValueError(f"teacher outputs {shapes}: the teacher needs the student's frame rate and units")
    mask = _valid_frames(student, lengths)
    kl = (teacher.exp() * (teacher - student)).sum(dim=-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


class Teacher:
    """The frozen model distillation matches: its log-probabilities on a batch's (augmented) waveforms.

    It computes its own features (the student's SpecAugment masks are not applied: the teacher gives
    clean targets) and never trains: eval mode, no gradients, moved to the student's device on use.
    """

    def __init__(self, model_path: str | os.PathLike) -> None:
        from asr.checkpoint import load_model

        self.recognizer = load_model(Path(model_path)).recognizer.eval()
        for parameter in self.recognizer.parameters():
            parameter.requires_grad_(False)

    def __call__(self, batch: Any, device: torch.device) -> Tensor:
        if batch is None:
            raise ValueError("distillation needs the batch: the teacher runs on its waveforms")
        self.recognizer.to(device)
        with torch.no_grad():
            log_probs, _ = self.recognizer(batch.waveforms.to(device), batch.waveform_lengths.to(device))
        return log_probs


def sharpness_measure(config: SharpnessRegularizerConfig) -> Measure:
    """The unweighted quantity the regularizer penalizes, as (log_probs, lengths, batch) -> scalar."""
    if config.kind == "nonblank_entropy":
        return lambda lp, n, batch=None: nonblank_entropy(lp, n, config.blank_id)
    if config.kind == "soft_nonblank_entropy":
        return lambda lp, n, batch=None: soft_nonblank_entropy(lp, n, config.blank_id)
    if config.kind == "margin":
        return lambda lp, n, batch=None: nonblank_margin(lp, n, config.blank_id, config.margin)
    if config.kind == "tail_mass":
        return lambda lp, n, batch=None: tail_mass(lp, n, config.top_k)
    if config.kind == "distillation":
        if config.teacher is None:
            raise ValueError("regularizer.kind distillation needs regularizer.teacher (a model file)")
        teacher = Teacher(config.teacher)
        return lambda lp, n, batch=None: distillation_kl(lp, teacher(batch, lp.device), n)
    return lambda lp, n, batch=None: mean_frame_entropy(lp, n)


class SharpnessRegularizer(L.Callback):
    """Adds lambda(step) x sharpness measure to the CTC loss of the module it is attached to, and logs the
    unweighted measure as ``train_<kind>`` (also when lambda is 0, so vanilla runs show it too)."""

    def __init__(self, config: SharpnessRegularizerConfig) -> None:
        self.config = config
        self.measure = sharpness_measure(config)
        self._trainer: L.Trainer | None = None
        self._module: L.LightningModule | None = None

    def weight_at(self, step: int) -> float:
        if self.config.warmup_steps == 0:
            return self.config.weight
        return self.config.weight * min(1.0, (step + 1) / self.config.warmup_steps)

    def loss(self, log_probs: Tensor, lengths: Tensor, batch: Any = None) -> Tensor:
        value = self.measure(log_probs, lengths, batch)
        if self._module is not None:
            self._module.log(f"train_{self.config.kind}", value.detach(), batch_size=log_probs.shape[0])
        step = self._trainer.global_step if self._trainer is not None else 0
        return self.weight_at(step) * value

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer, self._module = trainer, pl_module
        pl_module.add_loss_term(f"{self.config.kind}_weighted", self.loss)
        pl_module.add_validation_measure(self.config.kind, self.measure)
