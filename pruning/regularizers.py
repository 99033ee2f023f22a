"""Output-sharpness regularizers for decoder-aware pruning, added to the training loss of any criterion
and schedule through :meth:`asr.lightning_module.CTCModule.add_loss_term`.

``frame_entropy`` is the term of Gao et al. (KDD 2020): the mean Shannon entropy of the per-frame output
softmax over valid frames. A beam search with a probability cutoff keeps about exp(H) tokens a frame, so a
lower entropy bounds the search space. Mean entropy is dominated by (easy) blank frames, though, and the
search grows on the uncertain ones; so two variants closer to the search are offered beside it:

- ``nonblank_entropy``: the mean entropy over frames whose most probable token is not the blank, where
  the decoder actually branches.
- ``tail_mass``: the mean probability outside each frame's top ``top_k`` tokens, the mass that makes a
  ``cutoff_prob`` decoder try more tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
from torch import Tensor

from common.masks import valid_frame_mask
from decoding.entropy import mean_frame_entropy

REGULARIZER_KINDS = ("frame_entropy", "nonblank_entropy", "tail_mass")


@dataclass
class SharpnessRegularizerConfig:
    """Attributes:
    weight: lambda, the term's weight in the loss (0 = vanilla pruning, the term is still logged).
    warmup_steps: optimizer steps over which lambda ramps linearly from 0 (CTC alignments form first).
    kind: one of ``REGULARIZER_KINDS``.
    top_k: tokens counted as kept by ``tail_mass``.
    blank_id: the CTC blank (``nonblank_entropy``).
    """

    weight: float = 0.0
    warmup_steps: int = 0
    kind: str = "frame_entropy"
    top_k: int = 1
    blank_id: int = 0

    def __post_init__(self) -> None:
        if self.kind not in REGULARIZER_KINDS:
            raise ValueError(f"regularizer.kind must be one of {REGULARIZER_KINDS}, got {self.kind!r}")
        if self.weight < 0 or self.warmup_steps < 0 or self.top_k < 1:
            raise ValueError("regularizer: weight >= 0, warmup_steps >= 0 and top_k >= 1 are required")


def _valid_frames(log_probs: Tensor, lengths: Tensor) -> Tensor:
    return valid_frame_mask(lengths.to(log_probs.device), log_probs.shape[1])


def nonblank_entropy(log_probs: Tensor, lengths: Tensor, blank_id: int = 0) -> Tensor:
    """Mean entropy over valid frames whose argmax is not the blank (0 when there are none)."""
    mask = _valid_frames(log_probs, lengths) & (log_probs.argmax(dim=-1) != blank_id)
    entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
    return (entropy * mask).sum() / mask.sum().clamp(min=1)


def tail_mass(log_probs: Tensor, lengths: Tensor, top_k: int = 1) -> Tensor:
    """Mean probability outside the ``top_k`` most probable tokens over valid frames."""
    mask = _valid_frames(log_probs, lengths)
    kept = log_probs.topk(min(top_k, log_probs.shape[-1]), dim=-1).values.exp().sum(dim=-1)
    return ((1.0 - kept) * mask).sum() / mask.sum().clamp(min=1)


def sharpness_measure(config: SharpnessRegularizerConfig) -> Callable[[Tensor, Tensor], Tensor]:
    """The unweighted quantity the regularizer penalizes, as (log_probs, lengths) -> scalar."""
    if config.kind == "nonblank_entropy":
        return lambda lp, n: nonblank_entropy(lp, n, config.blank_id)
    if config.kind == "tail_mass":
        return lambda lp, n: tail_mass(lp, n, config.top_k)
    return mean_frame_entropy


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

    def loss(self, log_probs: Tensor, lengths: Tensor) -> Tensor:
        value = self.measure(log_probs, lengths)
        if self._module is not None:
            self._module.log(f"train_{self.config.kind}", value.detach(), batch_size=log_probs.shape[0])
        step = self._trainer.global_step if self._trainer is not None else 0
        return self.weight_at(step) * value

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer, self._module = trainer, pl_module
        pl_module.add_loss_term(f"{self.config.kind}_weighted", self.loss)
