"""Specification of `ddpm_hf.ema.ExponentialMovingAverage`."""

from __future__ import annotations

import pytest
import torch

from ddpm_hf.ema import ExponentialMovingAverage


def test_an_update_is_the_paper_average_with_constant_decay():
    model = torch.nn.Linear(3, 2)
    ema = ExponentialMovingAverage(model, decay=0.9)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ema.state_dict()[name], 0.9 * before[name] + 0.1 * value)
    assert ema.current_decay() == 0.9


def test_warmup_follows_the_weights_closely_at_first():
    ema = ExponentialMovingAverage(torch.nn.Linear(2, 2), decay=0.9999, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)
    ema.num_updates = 10_000_000
    assert ema.current_decay() == 0.9999


def test_the_average_is_a_frozen_copy_in_evaluation_mode():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    ema = ExponentialMovingAverage(model)
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())
    assert ema.model[0].weight.data_ptr() != model[0].weight.data_ptr()


def test_a_decay_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="ema_decay"):
        ExponentialMovingAverage(torch.nn.Linear(2, 2), decay=1.0)
