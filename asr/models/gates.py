"""Multiplicative unit gates used by pruning criteria that learn which units matter.

:class:`InformationBottleneckGate` is the gate of VIBNet (Dai et al., "Compressing neural networks using
the variational information bottleneck", ICML 2018), the second pruning algorithm the entropy-pruning
paper builds on: every unit's output is multiplied by z ~ N(mu, sigma^2) while training, and a KL term
pushes gates that carry no information towards a signal-to-noise ratio mu^2 / sigma^2 of zero. At
inference the gate is its mean, which structured surgery folds into the weights that read the unit.
"""

from __future__ import annotations

import torch
from torch import nn

INITIAL_LOG_VARIANCE = -6.0  # sigma^2 = e^-6: starts as an almost deterministic gate of 1


class InformationBottleneckGate(nn.Module):
    """z = mu + sigma * eps per unit on the last dimension (training); z = mu at inference."""

    def __init__(self, units: int) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.ones(units))
        self.log_variance = nn.Parameter(torch.full((units,), INITIAL_LOG_VARIANCE))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return hidden * self.mu
        noise = torch.randn_like(hidden)
        return hidden * (self.mu + noise * torch.exp(0.5 * self.log_variance))

    def log_snr(self) -> torch.Tensor:
        """log(mu^2 / sigma^2) per unit: how much information the gate lets through."""
        return torch.log(self.mu.pow(2) + 1e-12) - self.log_variance

    def kl_divergence(self) -> torch.Tensor:
        """VIBNet's per-unit KL upper bound, log(1 + mu^2 / sigma^2)."""
        return torch.nn.functional.softplus(self.log_snr())
