"""Exponential moving average of the weights, the network DDPM samples with (Ho et al. 2020, Appendix B: "We used
EMA on model parameters with a decay factor of 0.9999").

The average is itself a copy of the network, so it can be handed to a pipeline, sampled from and saved as is. Each
update is one fused `torch._foreach_lerp_` over all parameters — no Python loop over parameters per step.
"""

from __future__ import annotations

import copy

import torch

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage:
    """θ_ema ← decay · θ_ema + (1 − decay) · θ after every optimizer step.

    Args:
        model: the network being trained; a frozen copy of it in evaluation mode holds the average.
        decay: the paper's constant 0.9999.
        warmup: use min(decay, (1 + n) / (10 + n)) at update n instead, so that the average follows the weights
            closely early in short runs (off in the paper).
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, warmup: bool = False):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {decay}.")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        # floating-point buffers (none in the DDPM UNet) are copied, not averaged
        self._buffers = [b for b in self.model.buffers()]

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards `model`'s current weights (call after each optimizer step)."""
        weight = 1.0 - self.current_decay()
        averaged = list(self.model.parameters())
        current = [p.detach().to(a.dtype) for p, a in zip(model.parameters(), averaged, strict=True)]
        torch._foreach_lerp_(averaged, current, weight)
        for mine, theirs in zip(self._buffers, model.buffers(), strict=True):
            mine.copy_(theirs)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged network's weights (what a checkpoint stores)."""
        return self.model.state_dict()

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], num_updates: int) -> None:
        self.model.load_state_dict(state_dict)
        self.num_updates = num_updates
