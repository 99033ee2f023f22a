"""VIBNet on LSTM units: put information-bottleneck gates on a trained encoder, train them with a KL term,
and fold them back into the weights once pruning is done.

The gates live on each LSTM layer's output (``EncoderConfig.unit_gates = "vib"``), so they travel inside
checkpoints like any other weight and a resumed run keeps them. Folding multiplies every weight that reads
a unit by the unit's mean gate, which is exactly what the gate does at inference, so the exported model is
a plain encoder with no gates.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from asr.models.gates import InformationBottleneckGate
from asr.models.lstm_ctc import LSTMCTCEncoder


def gates_of(encoder: LSTMCTCEncoder) -> list[InformationBottleneckGate]:
    return [gate for gate in encoder.unit_gates if isinstance(gate, InformationBottleneckGate)]


@torch.no_grad()
def add_unit_gates(encoder: LSTMCTCEncoder) -> LSTMCTCEncoder:
    """The same encoder with a VIB gate (mean 1, tiny variance) on every LSTM unit."""
    if gates_of(encoder):
        return encoder
    gated = LSTMCTCEncoder(replace(encoder.config, unit_gates="vib"))
    gated.load_state_dict(encoder.state_dict(), strict=False)  # the gates' own parameters are new
    return gated.to(next(encoder.parameters()).device).train(encoder.training)


@torch.no_grad()
def fold_unit_gates(encoder: LSTMCTCEncoder) -> LSTMCTCEncoder:
    """A gate-free encoder whose outputs equal the gated encoder's at inference (gate = its mean)."""
    if not gates_of(encoder):
        return encoder
    config = encoder.config
    folded = LSTMCTCEncoder(replace(config, unit_gates="none"))
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("unit_gates.")}
    folded.load_state_dict(state)
    for i, gate in enumerate(encoder.unit_gates):
        if i + 1 < len(encoder.lstms):
            for d in range(config.directions):
                folded.lstm_parameter(i + 1, "weight_ih_l0", d).mul_(gate.mu[None, :])
        else:
            folded.head.weight.mul_(gate.mu[None, :])
    return folded.to(next(encoder.parameters()).device).train(encoder.training)


class VIBKLTerm:
    """weight x mean over gated units of log(1 + mu^2 / sigma^2): the loss term that closes useless gates.

    It reads the module's current encoder at every call, because structured surgery replaces the encoder
    (and its gates) during training. The mean (not VIBNet's sum) keeps one weight meaningful across model
    sizes and sparsities.
    """

    def __init__(self, owner: nn.Module, weight: float) -> None:
        if weight < 0:
            raise ValueError(f"vib.kl_weight must be >= 0, got {weight}")
        self.owner = owner
        self.weight = weight

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor, batch: object = None) -> torch.Tensor:
        gates = gates_of(self.owner.recognizer.encoder)
        if not gates:
            return log_probs.new_zeros(())
        return self.weight * torch.cat([gate.kl_divergence() for gate in gates]).mean()
