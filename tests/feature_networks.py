"""Stand-ins for the Inception network, for tests of the plumbing around it (caching, gathering, sample loading)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class PooledFeatures(torch.nn.Module):
    """A cheap, fixed stand-in for the Inception network where only the plumbing around it is specified: any module
    mapping (N, 3, 299, 299) to (N, 2048) features will do for caching, gathering and sample loading."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3 * 8 * 8, 2048)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(self.linear.weight.shape, generator=generator))
            self.linear.bias.copy_(torch.randn(self.linear.bias.shape, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(F.adaptive_avg_pool2d(x, 8).flatten(1))


class MustNotRun(torch.nn.Module):
    """A feature network that fails the test if it is ever called."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the feature network ran, but the cached statistics should have been read")
