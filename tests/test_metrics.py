"""Specification of `ddpm_hf.metrics`: bits/dim against a closed-form likelihood, FID and IS against references."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ddpm_hf import DDPMScheduler
from ddpm_hf.metrics import bits_per_dim, feature_statistics, frechet_distance, inception_score, variational_bound
from ddpm_hf.scheduler import VARIANCE_TYPES

LEARNED_RANGE_OUTPUT = 0.3  # the constant v an oracle outputs for "learned_range": σ² = β^0.65 β̃^0.35


def schedule(scheduler: DDPMScheduler) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """β_t, ᾱ_t and β̃_t (eq. 7, with ᾱ_{−1} = 1) of the scheduler's T steps, in float64 from its betas."""
    beta = scheduler.betas.double()
    alphas_cumprod = torch.cumprod(1 - beta, 0)
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    return beta, alphas_cumprod, beta * (1 - previous) / (1 - alphas_cumprod)


def reverse_variances(variance_type: str, beta: torch.Tensor, beta_tilde: torch.Tensor) -> torch.Tensor:
    """σ_t² at t = 0 … T−1 as documented: β̃_t ("fixed_small*"), β_t ("fixed_large*"), what the oracle outputs
    ("learned": (β_t + β̃_t)/2; "learned_range": exp(f log β_t + (1 − f) log β̃_t), f = (v + 1)/2). β̃_0 = 0, so at
    the decoder step t = 0 β̃_1 stands in for it, and the "fixed_large*" decoder too uses β̃_1 (the paper's code)."""
    beta_tilde_decoder = torch.cat([beta_tilde[1:2], beta_tilde[1:]])
    if variance_type.startswith("fixed_small"):
        return beta_tilde_decoder
    if variance_type.startswith("fixed_large"):
        return torch.cat([beta_tilde[1:2], beta[1:]])
    if variance_type == "learned":
        return (beta + beta_tilde) / 2
    f = (LEARNED_RANGE_OUTPUT + 1) / 2
    return torch.exp(f * beta.log() + (1 - f) * beta_tilde_decoder.log())


def decoder_nats(x_0: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """−log ∫ N(x; mean, σ²) over the bin of each 8-bit x_0, the end bins open to ∓∞ (eq. 13), elementwise."""
    half_bin = 1 / 255
    upper = torch.where(x_0 > 1 - half_bin, torch.inf, (x_0 + half_bin - mean) / sigma)
    lower = torch.where(x_0 < -1 + half_bin, -torch.inf, (x_0 - half_bin - mean) / sigma)
    return -torch.log(torch.special.ndtr(upper) - torch.special.ndtr(lower))


def prior_nats(x_0: torch.Tensor, alpha_bar_T: torch.Tensor) -> torch.Tensor:
    """D_KL(N(√ᾱ_T x_0, 1 − ᾱ_T) ‖ N(0, 1)) elementwise (eq. 4, 5)."""
    v = 1 - alpha_bar_T
    return 0.5 * (-torch.log(v) + v + alpha_bar_T * x_0**2 - 1)


def bits(nats: torch.Tensor) -> torch.Tensor:
    """Nats per pixel → bits per dimension of each image."""
    return nats.flatten(1).mean(dim=1) / math.log(2)


class OracleDenoiser:
    """The exact ε-predictor of a data set, ε(x_t, t) = (x_t − √ᾱ_t E[x_0 | x_t]) / √(1 − ᾱ_t), in float64.

    The data set is the single image x* (E[x_0 | x_t] = x*), or, given `levels`, the images whose pixels are drawn
    independently and uniformly from those values (E[x_0 | x_t] per pixel: the levels weighted by q(x_t | level),
    eq. 4). For a learned variance it also outputs the variance channel `reverse_variances` assumes.
    """

    dtype = torch.float64  # the precision `variational_bound` feeds x_t in

    def __init__(
        self, scheduler: DDPMScheduler, x_star: torch.Tensor | None = None, levels: torch.Tensor | None = None
    ):
        self.beta, self.alphas_cumprod, self.beta_tilde = schedule(scheduler)
        self.variance_type = scheduler.config.variance_type
        self.x_star = None if x_star is None else x_star.double()
        self.levels = levels

    def expected_original_sample(self, x_t: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if self.levels is None:
            return self.x_star
        log_weights = -((x_t.unsqueeze(-1) - a.unsqueeze(-1).sqrt() * self.levels) ** 2) / (2 * (1 - a.unsqueeze(-1)))
        return (log_weights.softmax(dim=-1) * self.levels).sum(dim=-1)

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor) -> SimpleNamespace:
        a = self.alphas_cumprod[timestep].reshape(-1, 1, 1, 1)
        x_t = sample.double()
        eps = (x_t - a.sqrt() * self.expected_original_sample(x_t, a)) / (1 - a).sqrt()
        if self.variance_type == "learned":
            variance = (self.beta[timestep] + self.beta_tilde[timestep]) / 2
            eps = torch.cat([eps, variance.reshape(-1, 1, 1, 1).expand_as(eps)], dim=1)
        elif self.variance_type == "learned_range":
            eps = torch.cat([eps, torch.full_like(eps, LEARNED_RANGE_OUTPUT)], dim=1)
        return SimpleNamespace(sample=eps)


def eight_bit_image(seed: int = 0) -> torch.Tensor:
    levels = torch.randint(0, 256, (1, 3, 4, 4), generator=torch.Generator().manual_seed(seed))
    levels[0, 0, 0, :2] = torch.tensor([0, 255])  # both edge bins too
    return levels.double() / 127.5 - 1


@pytest.mark.parametrize("variance_type", VARIANCE_TYPES)
def test_the_bound_lands_just_above_a_closed_form_likelihood(variance_type):
    """With the exact denoiser of a one-image data set, x̂_0 = x* at every step, so every term has a closed form:
    L_T of eq. 4; each L_{t−1} a KL of two Gaussians with the same mean, ½(log(σ_t²/β̃_t) + β̃_t/σ_t² − 1) per
    dimension (0 for σ_t² = β̃_t); and the decoder's mean is x* whatever x_1 is, so the model's exact likelihood is
    the discretized Gaussian of eq. 13 around x*, Π_i [Φ(δ+/σ_1) − Φ(δ−/σ_1)], which is also L_0. The bound must
    exceed it by exactly L_T + Σ L_{t−1}."""
    scheduler = DDPMScheduler(variance_type=variance_type)  # the paper's T = 1000
    x_star = eight_bit_image()
    bound = variational_bound(OracleDenoiser(scheduler, x_star), scheduler, x_star, torch.Generator().manual_seed(0))

    beta, alphas_cumprod, beta_tilde = schedule(scheduler)
    variance = reverse_variances(variance_type, beta, beta_tilde)
    kl = (0.5 * (torch.log(variance / beta_tilde) + beta_tilde / variance - 1))[1:].sum() / math.log(2)
    exact_nll_bits_per_dim = bits(decoder_nats(x_star, x_star, variance[0].sqrt())).item()

    assert bound.prior.item() == pytest.approx(bits(prior_nats(x_star, alphas_cumprod[-1])).item(), rel=1e-9)
    assert bound.kl.item() == pytest.approx(kl.item(), rel=1e-9, abs=1e-9)
    assert bound.decoder.item() == pytest.approx(exact_nll_bits_per_dim, rel=1e-9)
    assert 0 < bound.prior.item() < 1e-4
    assert bound.total.item() >= exact_nll_bits_per_dim
    assert bound.total.item() - exact_nll_bits_per_dim == pytest.approx(bound.prior.item() + kl.item(), rel=1e-6)
    assert torch.equal(bound.rate + bound.distortion, bound.total)


LEVELS = torch.tensor([0, 85, 170, 255], dtype=torch.float64) / 127.5 - 1  # 0.67 apart, both edge bins


@pytest.fixture(scope="module")
def posterior_error() -> torch.Tensor:
    """E[(x_0 − E[x_0 | x_t])²] per pixel at each t of the paper's schedule, for pixels uniform over LEVELS: a 1-d
    integral over x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) z, by the trapezoidal rule in z over [−10, 10] (float64)."""
    _, alphas_cumprod, _ = schedule(DDPMScheduler())
    z = torch.linspace(-10, 10, 401, dtype=torch.float64)
    weights = torch.exp(-(z**2) / 2) / math.sqrt(2 * math.pi) * (z[1] - z[0])
    a = alphas_cumprod.reshape(-1, 1, 1, 1)
    x_t = a.sqrt() * LEVELS.reshape(-1, 1, 1) + (1 - a).sqrt() * z.reshape(-1, 1)  # (T, level, z, 1)
    posterior = (-((x_t - a.sqrt() * LEVELS) ** 2) / (2 * (1 - a))).softmax(dim=-1)  # q(level' | x_t)
    error = (LEVELS.reshape(-1, 1) - (posterior * LEVELS).sum(dim=-1)) ** 2  # (T, level, z)
    return (error * weights).sum(dim=-1).mean(dim=-1)


@pytest.mark.parametrize("variance_type", VARIANCE_TYPES)
def test_the_bound_of_many_images_is_its_expectation_within_monte_carlo_noise(variance_type, posterior_error):
    """Pixels drawn independently and uniformly from 4 levels: each image has probability 4^−D, an exact NLL of
    2 bits/dim, which the bound must exceed. With the exact denoiser, μ̃_t − μ_θ = c_t (x_0 − x̂_0), c_t =
    √ᾱ_{t−1} β_t / (1 − ᾱ_t) (eq. 7), so E[L_{t−1}] = ½(log(σ_t²/β̃_t) + β̃_t/σ_t² − 1) + c_t² E[(x_0 − x̂_0)²] / (2σ_t²)
    per dimension (eq. 5): the KL sum must be within Monte-Carlo noise of it. At t = 0 the posterior is sure of the
    level (√(1 − ᾱ_0) = 0.01), so each image's L_0 is eq. 13 around its own pixels, and its L_T has its closed form."""
    scheduler = DDPMScheduler(variance_type=variance_type)
    images = LEVELS[torch.randint(0, 4, (16, 3, 8, 8), generator=torch.Generator().manual_seed(0))]
    assert len({tuple(image.flatten().tolist()) for image in images}) == 16
    oracle = OracleDenoiser(scheduler, levels=LEVELS)
    bound = variational_bound(oracle, scheduler, images, torch.Generator().manual_seed(1))

    beta, alphas_cumprod, beta_tilde = schedule(scheduler)
    variance = reverse_variances(variance_type, beta, beta_tilde)
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    c = previous.sqrt() * beta / (1 - alphas_cumprod)
    variance_mismatch = 0.5 * (torch.log(variance / beta_tilde) + beta_tilde / variance - 1)
    mean_mismatch = c**2 * posterior_error / (2 * variance)
    expected_kl = (variance_mismatch + mean_mismatch)[1:].sum().item() / math.log(2)  # t = 1 … T−1
    standard_error = (bound.kl.std() / math.sqrt(len(images))).item()
    exact_nll_bits_per_dim = math.log2(len(LEVELS))

    torch.testing.assert_close(bound.prior, bits(prior_nats(images, alphas_cumprod[-1])), rtol=1e-9, atol=0)
    torch.testing.assert_close(bound.decoder, bits(decoder_nats(images, images, variance[0].sqrt())), rtol=1e-9, atol=0)
    assert abs(bound.kl.mean().item() - expected_kl) < 4 * standard_error
    assert 0 < standard_error < 0.02
    assert bound.total.mean().item() - 4 * (bound.total.std() / math.sqrt(len(images))).item() > exact_nll_bits_per_dim


@torch.no_grad()
def test_the_bound_is_the_sum_of_its_terms_at_the_noise_its_generators_draw(tiny_unet):
    """L_T + Σ_t L_{t−1} + L_0 with x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε_t, each image's ε_t drawn from its own generator in
    the order t = T−1, …, 0 (in float32, used in float64): term by term as `vlb_terms` gives them, however the bound
    groups its KL terms for speed (here 39 of them, more than one group)."""
    scheduler = DDPMScheduler(num_train_timesteps=40, variance_type="fixed_large")
    images = torch.randint(0, 256, (3, 3, 16, 16), generator=torch.Generator().manual_seed(0)) / 127.5 - 1
    bound = variational_bound(tiny_unet.eval(), scheduler, images, [torch.Generator().manual_seed(i) for i in range(3)])

    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    _, alphas_cumprod, _ = schedule(scheduler)
    x_0, terms = images.double(), []
    for t in range(39, -1, -1):
        eps = torch.cat([torch.randn((1, 3, 16, 16), generator=g) for g in generators]).double()
        x_t = alphas_cumprod[t].sqrt() * x_0 + (1 - alphas_cumprod[t]).sqrt() * eps
        timesteps = torch.full((3,), t)
        terms.append(scheduler.vlb_terms(tiny_unet(x_t.float(), timesteps).sample.double(), x_0, x_t, timesteps))
    torch.testing.assert_close(bound.kl, torch.stack(terms[:-1]).sum(dim=0), rtol=1e-10, atol=0)
    torch.testing.assert_close(bound.decoder, terms[-1], rtol=1e-12, atol=0)
    torch.testing.assert_close(bound.prior, bits(prior_nats(x_0, alphas_cumprod[-1])), rtol=1e-9, atol=0)


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
