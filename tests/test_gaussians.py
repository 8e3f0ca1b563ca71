"""Specification of the Gaussian quantities of the variational bound (`ddpm_hf.gaussians`)."""

from __future__ import annotations

import pytest
import torch

from ddpm_hf.gaussians import discretized_gaussian_log_likelihood, normal_kl


def test_normal_kl_matches_torch_distributions():
    mean1, mean2 = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    logvar1, logvar2 = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    p = torch.distributions.Normal(mean1, (0.5 * logvar1).exp())
    q = torch.distributions.Normal(mean2, (0.5 * logvar2).exp())
    torch.testing.assert_close(normal_kl(mean1, logvar1, mean2, logvar2), torch.distributions.kl_divergence(p, q))


@pytest.mark.parametrize("mean, log_scale", [(0.0, -5.0), (0.3, -3.0), (-0.99, -6.0), (1.0, -1.0), (5.0, -4.0)])
def test_probabilities_of_all_256_levels_sum_to_one(mean, log_scale):
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    log_p = discretized_gaussian_log_likelihood(levels, torch.tensor(mean).double(), torch.tensor(log_scale).double())
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_far_tail_bins_stay_finite():
    """A bin 40 standard deviations from the mean has a tiny but finite log-probability, not −inf or NaN."""
    x = torch.tensor([0.0], dtype=torch.float64)
    log_p = discretized_gaussian_log_likelihood(x, torch.tensor([0.9]).double(), torch.tensor([-5.0]).double())
    assert torch.isfinite(log_p).all() and log_p.item() < -100
