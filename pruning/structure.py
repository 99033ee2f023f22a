"""Structured surgery: remove LSTM units and conv channels physically, so the pruned encoder is a smaller
dense model that really runs faster (no masks, no sparse kernels).

A *unit group* is a set of units that can be removed independently: ``conv.I`` (output channels of conv
layer I) and ``lstm.L`` (hidden units of LSTM layer L, per direction). A *keep plan* maps each group to
the indices it keeps: a (k,) tensor for a conv layer, a (directions, k) tensor for an LSTM layer (each
direction keeps its own k units; the config stores one width per layer, so both keep the same count).

Removing LSTM unit j of a direction takes its rows in all four gates of W_ih, W_hh and both biases, its
column in that direction's W_hh, and its output column in whatever reads the layer (the next LSTM's
W_ih, both directions, or the CTC head). A VIBNet gate on the layer keeps its kept units' entries.
Removing conv channel c takes the filter and bias of c and the input channel c of the next conv, or, for
the last conv, the c-th block of ``freq`` columns of the first LSTM's W_ih (the front end flattens
(channel, frequency) channel-major).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import Tensor

from asr.models.gates import InformationBottleneckGate
from asr.models.lstm_ctc import GATES_PER_UNIT, LSTM_WEIGHT_NAMES, LSTMCTCEncoder

KeepPlan = dict[str, Tensor]


def unit_groups(encoder: LSTMCTCEncoder) -> dict[str, tuple[int, int]]:
    """Every prunable group of the encoder: name -> (directions, units per direction)."""
    config = encoder.config
    groups = {f"conv.{i}": (1, c) for i, c in enumerate(config.conv_channels)}
    groups.update({f"lstm.{i}": (config.directions, h) for i, h in enumerate(config.lstm_hidden)})
    return groups


def full_plan(encoder: LSTMCTCEncoder) -> KeepPlan:
    """The plan that keeps everything (groups missing from a plan are kept whole)."""
    plan: KeepPlan = {}
    for name, (directions, units) in unit_groups(encoder).items():
        indices = torch.arange(units)
        plan[name] = indices if name.startswith("conv.") else indices.repeat(directions, 1)
    return plan


def _complete(encoder: LSTMCTCEncoder, plan: KeepPlan) -> KeepPlan:
    """``plan`` with missing groups kept whole, validated against the encoder's shapes."""
    groups = unit_groups(encoder)
    unknown = set(plan) - set(groups)
    if unknown:
        raise ValueError(f"keep plan names unknown unit groups {sorted(unknown)}; known: {sorted(groups)}")
    completed = full_plan(encoder)
    for name, keep in plan.items():
        directions, units = groups[name]
        keep = torch.as_tensor(keep, dtype=torch.long)
        expected_dims = 1 if name.startswith("conv.") else 2
        if keep.dim() != expected_dims or (expected_dims == 2 and keep.shape[0] != directions):
            raise ValueError(
                f"keep plan for {name}: expected {expected_dims}-D indices, got {tuple(keep.shape)}"
            )
        if keep.shape[-1] < 1:
            raise ValueError(f"keep plan for {name}: at least one unit must stay")
        for row in keep.reshape(-1, keep.shape[-1]):
            if row.unique().numel() != row.numel() or row.min() < 0 or row.max() >= units:
                raise ValueError(f"keep plan for {name}: indices must be distinct and in [0, {units})")
        completed[name] = keep.sort(dim=-1).values
    return completed


def _lstm_output_columns(keep: Tensor, units: int) -> Tensor:
    """Columns of the layer's (directions x units) output that survive: direction d's block is offset."""
    return torch.cat([keep[d] + d * units for d in range(keep.shape[0])])


def _frontend_columns(keep: Tensor, freq: int) -> Tensor:
    """Flattened front-end features of the kept channels (channel-major (channel, freq) layout)."""
    return (keep[:, None] * freq + torch.arange(freq)[None, :]).reshape(-1)


def _gate_rows(keep: Tensor, units: int) -> Tensor:
    """Rows of nn.LSTM's stacked (4 x units) gate weights that belong to the kept units."""
    return torch.cat([keep + g * units for g in range(GATES_PER_UNIT)])


@torch.no_grad()
def prune_encoder(encoder: LSTMCTCEncoder, plan: KeepPlan) -> LSTMCTCEncoder:
    """A new, smaller encoder that keeps only ``plan``'s units, with their trained weights.

    Its outputs equal those of :func:`mask_encoder` (the same encoder with the removed units silenced) up
    to float rounding. The input encoder is not modified; the result is in the input's train/eval mode.
    """
    plan = _complete(encoder, plan)
    config = encoder.config
    convs = encoder.conv_layers()
    new_config = replace(
        config,
        conv_channels=[int(plan[f"conv.{i}"].numel()) for i in range(len(convs))],
        lstm_hidden=[int(plan[f"lstm.{i}"].shape[1]) for i in range(len(config.lstm_hidden))],
    )
    pruned = LSTMCTCEncoder(new_config).to(next(encoder.parameters()).device)

    # front end: each conv keeps its channels' filters and reads only the previous conv's kept channels
    previous = torch.arange(1)
    for i, (old, new) in enumerate(zip(convs, pruned.conv_layers(), strict=True)):
        keep = plan[f"conv.{i}"]
        new.weight.copy_(old.weight[keep][:, previous])
        new.bias.copy_(old.bias[keep])
        previous = keep
    columns = (
        _frontend_columns(plan[f"conv.{len(convs) - 1}"], encoder.frontend.output_freq)
        if convs
        else torch.arange(encoder.frontend.output_dim)
    )

    # LSTM layers: gate rows of the kept units, inputs from the kept outputs of what comes before
    for i in range(len(config.lstm_hidden)):
        keep, units = plan[f"lstm.{i}"], config.lstm_hidden[i]
        for d in range(config.directions):
            rows = _gate_rows(keep[d], units)
            input_columns = {"weight_ih_l0": columns, "weight_hh_l0": keep[d]}
            for name in LSTM_WEIGHT_NAMES:
                kept = encoder.lstm_parameter(i, name, d)[rows]
                if name in input_columns:
                    kept = kept[:, input_columns[name]]
                pruned.lstm_parameter(i, name, d).copy_(kept)
        columns = _lstm_output_columns(keep, units)
        old_gate, new_gate = encoder.unit_gates[i], pruned.unit_gates[i]
        if isinstance(old_gate, InformationBottleneckGate):
            new_gate.mu.copy_(old_gate.mu[columns])
            new_gate.log_variance.copy_(old_gate.log_variance[columns])

    pruned.head.weight.copy_(encoder.head.weight[:, columns])
    pruned.head.bias.copy_(encoder.head.bias)
    pruned.train(encoder.training)
    return pruned


@torch.no_grad()
def mask_encoder(encoder: LSTMCTCEncoder, plan: KeepPlan) -> LSTMCTCEncoder:
    """A same-shape copy of ``encoder`` in which the units ``plan`` drops can no longer affect the output.

    A removed conv channel gets a zero filter and bias (ReLU(0) = 0 feeds the next layer nothing); a
    removed LSTM unit still computes, but every weight that reads its output (its column in W_hh, the
    next layer's W_ih or the head) is zeroed. This is the reference :func:`prune_encoder` must equal.
    """
    plan = _complete(encoder, plan)
    masked = copy.deepcopy(encoder)
    config = encoder.config
    for i, conv in enumerate(masked.conv_layers()):
        dropped = torch.ones(conv.out_channels, dtype=torch.bool)
        dropped[plan[f"conv.{i}"]] = False
        conv.weight[dropped] = 0.0
        conv.bias[dropped] = 0.0
    for i in range(len(config.lstm_hidden)):
        units = config.lstm_hidden[i]
        dropped = torch.ones(config.directions, units, dtype=torch.bool)
        for d in range(config.directions):
            dropped[d, plan[f"lstm.{i}"][d]] = False
        for d in range(config.directions):
            masked.lstm_parameter(i, "weight_hh_l0", d)[:, dropped[d]] = 0.0
        readers = (
            [masked.lstm_parameter(i + 1, "weight_ih_l0", d) for d in range(config.directions)]
            if i + 1 < len(masked.lstms)
            else [masked.head.weight]
        )
        for weight in readers:
            weight[:, dropped.reshape(-1)] = 0.0
    return masked


def sparsity_of(encoder: LSTMCTCEncoder, reference: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Fraction of each group's units removed relative to ``reference`` (the unpruned model's groups)."""
    current = unit_groups(encoder)
    return {name: 1.0 - current[name][1] / units for name, (_, units) in reference.items()}


def lstm_sparsity(encoder: LSTMCTCEncoder, reference: dict[str, tuple[int, int]]) -> float:
    """Fraction of all LSTM units removed relative to ``reference``: the study's sparsity axis."""
    current = unit_groups(encoder)
    lstm = [name for name in reference if name.startswith("lstm.")]
    total = sum(reference[name][0] * reference[name][1] for name in lstm)
    kept = sum(current[name][0] * current[name][1] for name in lstm)
    return 1.0 - kept / total
