"""Specification of `ddpm_hf.metrics`: bits/dim against a closed-form likelihood, FID and IS against references."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ddpm_hf import DDPMScheduler
from ddpm_hf.metrics import bits_per_dim, feature_statistics, frechet_distance, inception_score, variational_bound


class OracleDenoiser:
    """The exact ε-predictor when the data is the single image x*: ε(x_t, t) = (x_t − √ᾱ_t x*) / √(1 − ᾱ_t)."""

    dtype = torch.float64  # the precision `variational_bound` feeds x_t in

    def __init__(self, scheduler: DDPMScheduler, x_star: torch.Tensor):
        self.alphas_cumprod = torch.cumprod(1 - scheduler.betas.double(), 0)
        self.x_star = x_star.double()

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor) -> SimpleNamespace:
        a = self.alphas_cumprod[timestep].reshape(-1, 1, 1, 1)
        return SimpleNamespace(sample=(sample.double() - a.sqrt() * self.x_star) / (1 - a).sqrt())


def eight_bit_image(seed: int = 0) -> torch.Tensor:
    levels = torch.randint(0, 256, (1, 3, 4, 4), generator=torch.Generator().manual_seed(seed))
    levels[0, 0, 0, :2] = torch.tensor([0, 255])  # both edge bins too
    return levels.double() / 127.5 - 1


def test_the_bound_lands_just_above_a_closed_form_likelihood():
    """With the exact denoiser of a one-image data set and σ_t² = β̃_t, every reverse step equals the true
    posterior, so every KL term is 0 and the decoder's mean is x* whatever x_1 is: the model's exact likelihood is
    the discretized Gaussian of eq. 13 around x*, Π_i [Φ(δ+/σ_1) − Φ(δ−/σ_1)]. The bound must exceed it by exactly
    the prior term L_T."""
    scheduler = DDPMScheduler()  # the paper's T = 1000 and σ_t² = β̃_t
    x_star = eight_bit_image()
    bound = variational_bound(OracleDenoiser(scheduler, x_star), scheduler, x_star, torch.Generator().manual_seed(0))

    sigma = math.exp(0.5 * scheduler._q["posterior_log_variance_clipped"][0].item())
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    half_bin = 1 / 255
    log_p = 0.0
    for value in x_star.flatten().tolist():
        upper = 1.0 if value > 1 - half_bin else phi(half_bin / sigma)
        lower = 0.0 if value < -1 + half_bin else phi(-half_bin / sigma)
        log_p += math.log(upper - lower)
    exact_nll_bits_per_dim = -log_p / x_star.numel() / math.log(2)

    assert bound.kl.abs().item() < 1e-6
    assert bound.decoder.item() == pytest.approx(exact_nll_bits_per_dim, rel=1e-9)
    assert 0 < bound.prior.item() < 1e-4
    assert bound.total.item() >= exact_nll_bits_per_dim
    assert bound.total.item() - exact_nll_bits_per_dim == pytest.approx(bound.prior.item(), rel=1e-6)
    assert torch.equal(bound.rate + bound.distortion, bound.total)


def test_a_worse_model_gets_a_larger_bound():
    scheduler = DDPMScheduler(num_train_timesteps=100)
    x_star = eight_bit_image(1)
    oracle = OracleDenoiser(scheduler, x_star)

    def biased(sample, timestep):
        return SimpleNamespace(sample=oracle(sample, timestep).sample + 0.1)

    good = bits_per_dim(oracle, scheduler, x_star, torch.Generator().manual_seed(0))
    bad = bits_per_dim(biased, scheduler, x_star, torch.Generator().manual_seed(0))
    assert bad.item() > good.item() + 0.1


def test_bits_per_dim_needs_images_on_the_8bit_grid():
    scheduler = DDPMScheduler(num_train_timesteps=10)
    oracle = OracleDenoiser(scheduler, eight_bit_image())
    with pytest.raises(ValueError, match="8-bit grid"):
        bits_per_dim(oracle, scheduler, torch.full((1, 3, 4, 4), 0.001))
    with pytest.raises(ValueError, match="8-bit grid"):
        bits_per_dim(oracle, scheduler, torch.full((1, 3, 4, 4), 3.0))


def random_covariance(dimension: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(dimension, dimension))
    return a @ a.T + 0.1 * np.eye(dimension)


def test_frechet_distance_matches_an_independent_computation():
    """Reference: the eigenvalues of the non-symmetric Σ_1 Σ_2, whose square roots sum to Tr (Σ_1 Σ_2)^{1/2}."""
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    sigma1, sigma2 = random_covariance(8, 1), random_covariance(8, 2)
    trace_sqrt = np.sqrt(np.linalg.eigvals(sigma1 @ sigma2).real).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_diagonal_gaussians_has_its_closed_form():
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 16.0])
    expected = 1.0 + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(np.zeros(3), np.diag(a), np.array([1.0, 0, 0]), np.diag(b)) == pytest.approx(expected)


def test_fid_of_a_set_against_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(500, 16))
    mu, sigma = feature_statistics(features)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8
    torch_mu, torch_sigma = feature_statistics(torch.from_numpy(features))
    assert np.allclose(torch_mu, mu) and np.allclose(torch_sigma, np.cov(features, rowvar=False))


def test_frechet_distance_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="Shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_inception_score_of_fixed_logits_matches_a_hand_computation():
    # Confident and spread over 4 classes: IS → 4. Identical predictions: IS = 1.
    confident = np.log(np.eye(4) * 0.97 + 0.01)
    score, spread = inception_score(np.tile(confident, (5, 1)), splits=1)
    p = np.exp(confident) / np.exp(confident).sum(1, keepdims=True)
    marginal = p.mean(0)
    expected = math.exp(np.mean(np.sum(p * (np.log(p) - np.log(marginal)), axis=1)))
    assert score == pytest.approx(expected, rel=1e-12) and spread == 0.0
    assert 3.3 < score < 4.0  # exp(0.97 log 3.88 + 0.03 log 0.04) ≈ 3.39
    assert inception_score(np.zeros((20, 10)), splits=2) == (pytest.approx(1.0), 0.0)


def test_inception_score_needs_enough_samples_for_its_splits():
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.zeros((5, 10)), splits=10)


def test_bits_per_dim_of_a_real_unet_is_per_image_and_independent_of_the_batch(tiny_unet):
    scheduler = DDPMScheduler(num_train_timesteps=10)
    images = torch.randint(0, 256, (3, 3, 16, 16), generator=torch.Generator().manual_seed(0)) / 127.5 - 1
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    together = bits_per_dim(tiny_unet.eval(), scheduler, images, generators)
    alone = bits_per_dim(tiny_unet, scheduler, images[1:2], [torch.Generator().manual_seed(1)])
    assert together.shape == (3,) and torch.isfinite(together).all() and (together > 0).all()
    torch.testing.assert_close(alone[0], together[1], rtol=1e-5, atol=1e-6)
