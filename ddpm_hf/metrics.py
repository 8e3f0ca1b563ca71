"""The paper's evaluation metrics: negative log-likelihood in bits/dim, FID and Inception Score.

* **Bits per dimension** (Ho et al. 2020, §4.2, Table 2 and Table 4): the variational bound of eq. 5 evaluated term
  by term (`ddpm_hf.likelihood`), L = L_T + Σ_{t>1} L_{t−1} + L_0, each KL term with a fresh draw x_t ~ q(x_t | x_0)
  and the decoder term L_0 (eq. 13) at t = 0 only. This is an upper bound on −log p_θ(x_0); the paper reports
  ≤ 3.75 bits/dim on the CIFAR-10 test set, rate (L_1 + … + L_T) 1.78 and distortion (L_0) 1.97.
* **FID** (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to Inception features,
  ‖μ_1 − μ_2‖² + Tr(Σ_1 + Σ_2 − 2 (Σ_1 Σ_2)^{1/2}).
* **Inception Score** (Salimans et al. 2016): exp E_x KL(p(y | x) ‖ p(y)), averaged over splits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from . import likelihood
from .scheduler import DDPMScheduler

__all__ = [
    "VariationalBound",
    "variational_bound",
    "bits_per_dim",
    "feature_statistics",
    "frechet_distance",
    "inception_score",
]


@dataclass
class VariationalBound:
    """The terms of the bound of eq. 5 per image, in bits per dimension (tensors of shape (B,)).

    Attributes:
        total: L_T + Σ L_{t−1} + L_0, an upper bound on the negative log-likelihood.
        prior: L_T = D_KL(q(x_T | x_0) ‖ N(0, I)).
        kl: Σ_{t>1} L_{t−1}, the sum of the denoising KL terms.
        decoder: L_0 = −log p_θ(x_0 | x_1), the discretized decoder of eq. 13 ("distortion").
    """

    total: torch.Tensor
    prior: torch.Tensor
    kl: torch.Tensor
    decoder: torch.Tensor

    @property
    def rate(self) -> torch.Tensor:
        """L_1 + … + L_T of the paper's Table 4: the prior and every KL term."""
        return self.prior + self.kl

    @property
    def distortion(self) -> torch.Tensor:
        """L_0 of the paper's Table 4."""
        return self.decoder


def _check_8bit_images(images: torch.Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be a batch (B, C, H, W), got shape {tuple(images.shape)}.")
    levels = (images.double() + 1) * 127.5
    if levels.min() < -1e-4 or levels.max() > 255 + 1e-4 or (levels - levels.round()).abs().max() > 1e-3:
        raise ValueError("images must lie in [-1, 1] on the 8-bit grid (x = 2k/255 − 1 for integers k).")


@torch.no_grad()
def variational_bound(
    unet: Callable,
    scheduler: DDPMScheduler,
    images: torch.Tensor,
    generator: torch.Generator | list[torch.Generator] | None = None,
    show_progress: bool = False,
) -> VariationalBound:
    """Evaluate every term of the bound (eq. 5) for a batch of images, with one network call per timestep.

    Args:
        unet: anything called as `unet(sample, timestep).sample`, such as a `diffusers.UNet2DModel`.
        scheduler: the forward process the network was trained with.
        images: x_0, a batch (B, C, H, W) in [−1, 1] on the 8-bit grid.
        generator: the source of the noise ε_t of each x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε_t; a list gives one per image.
            One draw of the batch's shape per timestep, t = T−1 down to 0, in float32 (the sampler's precision; the
            bound is then computed in float64).
        show_progress: a progress bar over the T timesteps.

    A network in training mode is evaluated in evaluation mode (no dropout), then put back.
    """
    _check_8bit_images(images)
    training = getattr(unet, "training", False)
    if training:  # dropout off: the bound of the network itself
        unet.eval()
    try:
        return _variational_bound(unet, scheduler, images, generator, show_progress)
    finally:
        if training:
            unet.train()


# The KL terms are evaluated a group of timesteps at a time: between two network calls only x_t and the network's
# output are stored, and the KL's few dozen small operations run once per group. (On a CPU each small operation right
# after a network call costs several times its usual time, the caches being cold.) A group holds at most this many
# float64 values (400 kB) per tensor, to stay in cache: for 8 images of 3×16×16, 8 timesteps, the fastest of groups
# of 1, 4, 8, 16 and 32 timesteps (`benchmarks/bits_per_dim.py`).
_GROUP_ELEMENTS = 50_000


def _variational_bound(
    unet: Callable,
    scheduler: DDPMScheduler,
    images: torch.Tensor,
    generator: torch.Generator | list[torch.Generator] | None,
    show_progress: bool,
) -> VariationalBound:
    x_0 = images.double()
    device, dtype, batch = images.device, getattr(unet, "dtype", torch.float32), images.shape[0]
    T = scheduler.config.num_train_timesteps
    group = _KLGroup(scheduler, x_0, max(1, min(T - 1, _GROUP_ELEMENTS // x_0.numel())))
    for t in tqdm(range(T - 1, -1, -1), desc="Variational bound", disable=not show_progress):
        c = scheduler.chain_coefficients(t, x_0)  # the step's float64 scalars
        # ε in float32, as the sampler draws it (torch draws float64 normals several times slower), used in float64
        noise = randn_tensor(images.shape, generator=generator, device=device, dtype=torch.float32).double()
        x_t = scheduler.diffuse((c.sqrt_alpha_prod, c.sqrt_beta_prod), x_0, noise)  # x_t ~ q(x_t | x_0)   (eq. 4)
        model_output = unet(x_t.to(dtype), torch.full((batch,), t, dtype=torch.long, device=device)).sample
        if t > 0:
            group.add(t, x_t, model_output)  # L_{t−1}
        else:  # L_0, the only decoder term (eq. 13)
            decoder = likelihood.decoder_nll(scheduler, c, model_output.double(), x_0, x_t)
    prior = likelihood.prior_bpd(scheduler, x_0)  # L_T
    return VariationalBound(total=prior + group.kl + decoder, prior=prior, kl=group.kl, decoder=decoder)


class _KLGroup:
    """Σ_{t>0} L_{t−1} per image (eq. 5), evaluated `size` timesteps at a time as they come (t descending to 1)."""

    def __init__(self, scheduler: DDPMScheduler, x_0: torch.Tensor, size: int):
        self.scheduler, self.batch, self.size = scheduler, x_0.shape[0], size
        self.x_0 = x_0.repeat(size, 1, 1, 1)  # image i at rows i, B + i, 2B + i, … of the group
        self.x_t = torch.empty_like(self.x_0)
        self.output: torch.Tensor | None = None  # made at the first output, which has 2C channels for learned σ
        self.timesteps: list[int] = []
        self.kl = torch.zeros(self.batch, dtype=torch.float64, device=x_0.device)

    def add(self, t: int, x_t: torch.Tensor, model_output: torch.Tensor) -> None:
        if self.output is None:
            shape = (self.size * self.batch, *model_output.shape[1:])
            self.output = torch.empty(shape, dtype=torch.float64, device=self.x_0.device)
        rows = slice(len(self.timesteps) * self.batch, (len(self.timesteps) + 1) * self.batch)
        self.x_t[rows].copy_(x_t)
        self.output[rows].copy_(model_output)  # in float64, contiguous
        self.timesteps.append(t)
        if len(self.timesteps) == self.size or t == 1:
            self._evaluate()

    def _evaluate(self) -> None:
        first, last = self.timesteps[0], self.timesteps[-1]
        n = len(self.timesteps) * self.batch
        timesteps = torch.arange(first, last - 1, -1, device=self.x_0.device).repeat_interleave(self.batch)
        c = self.scheduler.chain_coefficients(timesteps, self.x_t[:n])  # one row per image and timestep
        terms = likelihood.kl_term(self.scheduler, c, self.output[:n], self.x_0[:n], self.x_t[:n])
        self.kl += terms.reshape(-1, self.batch).sum(dim=0)
        self.timesteps = []


def bits_per_dim(
    unet: Callable,
    scheduler: DDPMScheduler,
    images: torch.Tensor,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> torch.Tensor:
    """The negative log-likelihood bound of each image in bits/dim: `variational_bound(...).total`, shape (B,)."""
    return variational_bound(unet, scheduler, images, generator).total


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the (unbiased) covariance of N feature vectors (N, D), in float64, as pytorch-fid computes them."""
    features = torch.as_tensor(features).cpu().double().numpy()
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be an (N, D) array with N ≥ 2, got shape {features.shape}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ_1 − μ_2‖² + Tr(Σ_1 + Σ_2 − 2 (Σ_1 Σ_2)^{1/2}), the FID of two feature Gaussians.

    Tr (Σ_1 Σ_2)^{1/2} is the sum of the square roots of the eigenvalues of the symmetric positive semi-definite
    matrix Σ_1^{1/2} Σ_2 Σ_1^{1/2}, which has the same eigenvalues as Σ_1 Σ_2; no complex matrix square root is
    needed.
    """
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"Shapes do not match: means {mu1.shape} and {mu2.shape}, covariances {sigma1.shape} and {sigma2.shape}."
        )
    eigenvalues, eigenvectors = np.linalg.eigh(sigma1)
    sqrt_sigma1 = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T
    product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum()
    difference = mu1 - mu2
    return float(difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """exp E_x KL(p(y | x) ‖ p(y)) from classifier logits (N, classes), as the mean and standard deviation over
    `splits` equal parts (the convention of Salimans et al. 2016: 10 splits of 50,000 samples)."""
    logits = torch.as_tensor(logits).cpu().double()
    if logits.ndim != 2 or logits.shape[0] < splits or splits < 1:
        raise ValueError(f"logits must be (N, classes) with N ≥ splits = {splits}, got shape {tuple(logits.shape)}.")
    log_p = torch.log_softmax(logits, dim=1)
    scores = []
    for part in torch.tensor_split(log_p, splits):
        log_marginal = torch.logsumexp(part, dim=0) - np.log(part.shape[0])  # log p(y) over the split
        kl = (part.exp() * (part - log_marginal)).sum(dim=1)
        scores.append(float(kl.mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))
