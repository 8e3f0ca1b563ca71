"""The two Gaussian quantities of DDPM's variational bound (Ho et al. 2020, eq. 5 and eq. 13).

Every term of the bound

    L = E_q[ D_KL(q(x_T|x_0) || p(x_T))                                    (L_T, the prior term)
           + Σ_{t>1} D_KL(q(x_{t-1}|x_t, x_0) || p_θ(x_{t-1}|x_t))         (L_{t-1})
           − log p_θ(x_0|x_1) ]                                             (L_0, the decoder)

is either a KL divergence between two diagonal Gaussians (closed form, `normal_kl`) or the log-likelihood of 8-bit
data under the discretized Gaussian decoder of eq. 13 (`discretized_gaussian_log_likelihood`). Both return values in
nats, elementwise; `ddpm_hf.likelihood` averages them over pixels and converts to bits per dimension.
"""

from __future__ import annotations

import math

import torch

__all__ = ["normal_kl", "discretized_gaussian_log_likelihood", "NATS_PER_BIT"]

NATS_PER_BIT = math.log(2.0)


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats.

    For one dimension: ½ [ log σ₂² − log σ₁² + σ₁²/σ₂² + (μ₁ − μ₂)²/σ₂² − 1 ].
    Arguments broadcast against each other.
    """
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor, num_bins: int = 256
) -> torch.Tensor:
    """log p(x) of data on the 8-bit grid in [-1, 1] under the decoder of eq. 13, elementwise, in nats.

    Ho et al. 2020, eq. 13:

        p_θ(x_0|x_1) = Π_i ∫_{δ−(x_0^i)}^{δ+(x_0^i)} N(x; μ_θ^i(x_1, 1), σ_1²) dx,
        δ+(x) = ∞ if x = 1 else x + 1/255,      δ−(x) = −∞ if x = −1 else x − 1/255.

    The Gaussian CDF is evaluated exactly (the original code used a tanh approximation), with the edge bins and the
    small-probability interior bins computed through `log_ndtr` so that they do not underflow.

    Args:
        x: data in [-1, 1] on the grid of `num_bins` levels (x = 2·k/(num_bins − 1) − 1).
        means: μ_θ(x_1, 1), broadcastable to `x`.
        log_scales: log σ_1 (log standard deviation), broadcastable to `x`.
        num_bins: number of levels of the data (256 for 8-bit images).
    """
    half_bin = 1.0 / (num_bins - 1)
    inv_std = torch.exp(-log_scales)
    upper = inv_std * (x - means + half_bin)  # standardised δ+(x)
    lower = inv_std * (x - means - half_bin)  # standardised δ−(x)
    log_cdf_upper = torch.special.log_ndtr(upper)  # log Φ(δ+), the first bin: x = −1
    log_sf_lower = torch.special.log_ndtr(-lower)  # log (1 − Φ(δ−)), the last bin: x = 1
    # Interior bins: log(Φ(u) − Φ(l)) = log Φ(u) + log(1 − exp(log Φ(l) − log Φ(u))), or mirrored where the bin lies
    # right of the mean, so that the difference is always taken where the CDF is not close to 1.
    left = (lower + upper) < 0
    log_hi = torch.where(left, log_cdf_upper, log_sf_lower)
    log_lo = torch.where(left, torch.special.log_ndtr(lower), torch.special.log_ndtr(-upper))
    log_delta = log_hi + torch.log1p(-torch.exp(log_lo - log_hi).clamp(max=1.0 - 1e-12))
    edge = 1.0 - half_bin / 2  # halfway between the last two levels
    return torch.where(x < -edge, log_cdf_upper, torch.where(x > edge, log_sf_lower, log_delta))
