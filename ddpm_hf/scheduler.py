"""The DDPM forward process and ancestral sampler (Ho, Jain, Abbeel 2020, arXiv 2006.11239).

Notation of the paper, with timesteps indexed from 0 as in diffusers (paper step `t` is index `t − 1` here):

    β_t                                   the variance schedule, α_t = 1 − β_t, ᾱ_t = Π_{s≤t} α_s
    q(x_t | x_{t−1}) = N(√α_t x_{t−1}, β_t I)                                          (eq. 2)
    q(x_t | x_0)     = N(√ᾱ_t x_0, (1 − ᾱ_t) I)                                         (eq. 4)
    q(x_{t−1} | x_t, x_0) = N(μ̃_t(x_t, x_0), β̃_t I)                                    (eq. 6)
    μ̃_t(x_t, x_0) = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t
    β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t                                             (eq. 7)
    p_θ(x_{t−1} | x_t) = N(μ_θ(x_t, t), σ_t² I),   σ_t² = β_t or β̃_t                    (eq. 1, §3.2)
    x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t                                        (eq. 15)
    μ_θ(x_t, t) = μ̃_t(x_t, x̂_0) = (x_t − β_t / √(1 − ᾱ_t) ε_θ(x_t, t)) / √α_t           (eq. 11)

Each equation is written once. Every scalar of a reverse step x_t → x_{t'} is a function of ᾱ_t and ᾱ_{t'} alone
(`StepCoefficients.between`), and x̂_0, μ̃_t and σ_t² are methods of the scheduler that take those scalars
(`original_sample`, `posterior_mean`, `reverse_variance`). Two precisions feed them:

* sampling (`step`, and the CUDA-graph step of `ddpm_hf.cuda_graphs`): the scalars of each step in float32, from
  diffusers' own float32 ᾱ table, operation for operation as `diffusers.DDPMScheduler.step` computes them, so that the
  two give the same images from the same seed;
* the likelihood (`q_posterior`, `p_mean_variance` and the bound of `ddpm_hf.likelihood`): the scalars of the T-step
  chain computed once in float64 (`self.chain`), as the paper's reference code did, and cast to the input's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, TypeVar

import numpy as np
import torch
from diffusers import DDPMScheduler as _DiffusersDDPMScheduler
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from diffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput, betas_for_alpha_bar, rescale_zero_terminal_snr
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from . import likelihood

__all__ = [
    "DDPMScheduler",
    "DDPMSchedulerOutput",
    "ModelPrediction",
    "ReverseVariance",
    "Coefficients",
    "StepCoefficients",
    "original_sample",
    "predicted_noise",
    "BETA_SCHEDULES",
    "VARIANCE_TYPES",
    "PREDICTION_TYPES",
    "TIMESTEP_SPACINGS",
    "LOSS_TYPES",
    "respaced_timesteps",
]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
# "mean" is the paper's direct μ̃-prediction (Table 2, first rows); the other three are diffusers' names.
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction", "mean")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
LOSS_TYPES = likelihood.LOSS_TYPES


def sqrt_alphas(alpha_prod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """√ᾱ_t and √(1 − ᾱ_t), the two factors of q(x_t | x_0) (eq. 4), as diffusers computes them."""
    return alpha_prod ** (0.5), (1 - alpha_prod) ** (0.5)


class Coefficients:
    """A dataclass of a step's scalars (0-dim tensors), or of many steps' (1-d tables, one row per step)."""

    @classmethod
    def stack(cls: type[C], steps: list[C]) -> C:
        """The coefficients of many steps, each field a 1-d tensor over `steps`."""
        return cls(**{f.name: torch.stack([getattr(c, f.name) for c in steps]) for f in fields(cls)})

    def to(self: C, device: torch.device | str) -> C:
        """The same coefficients on `device`."""
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def copy_(self: C, other: C) -> C:
        """Overwrite these tables with `other`'s values, in place (a captured CUDA graph reads their memory)."""
        for f in fields(self):
            getattr(self, f.name).copy_(getattr(other, f.name))
        return self

    def select(self: C, index: torch.Tensor) -> C:
        """Step `index` (a 1-element long tensor) of stacked coefficients as 0-dim tensors, which combine with a
        sample exactly as a step's own scalars do: an `index_select` on the tables' device, with no host
        synchronisation."""
        return type(self)(**{f.name: getattr(self, f.name).index_select(0, index)[0] for f in fields(self)})


C = TypeVar("C", bound=Coefficients)


@dataclass
class StepCoefficients(Coefficients):
    """The scalars of reverse steps x_t → x_{t'}: 0-dim tensors for one step, or one value per step or per image.

    Attributes:
        sqrt_alpha_prod: √ᾱ_t.
        sqrt_beta_prod: √(1 − ᾱ_t).
        pred_original_sample_coeff: √ᾱ_{t'} β_t / (1 − ᾱ_t), the factor of x_0 in μ̃_t (eq. 7).
        current_sample_coeff: √(ᾱ_t/ᾱ_{t'}) (1 − ᾱ_{t'}) / (1 − ᾱ_t), the factor of x_t in μ̃_t (eq. 7).
        beta: the step's β_t = 1 − ᾱ_t/ᾱ_{t'}: the upper end of "learned_range".
        posterior_variance: β̃_t (eq. 7), at least 1e-20 (its logarithm is taken): σ_t² of "fixed_small" and the
            lower end of "learned_range".
        large_variance: σ_t² of "fixed_large": β_t, except at the bound's decoder step (`DDPMScheduler.chain`).
    """

    sqrt_alpha_prod: torch.Tensor
    sqrt_beta_prod: torch.Tensor
    pred_original_sample_coeff: torch.Tensor
    current_sample_coeff: torch.Tensor
    beta: torch.Tensor
    posterior_variance: torch.Tensor
    large_variance: torch.Tensor

    @classmethod
    def between(cls, alpha_prod_t: torch.Tensor, alpha_prod_t_prev: torch.Tensor) -> StepCoefficients:
        """The steps ᾱ_t → ᾱ_{t'}, elementwise in the inputs' precision: the operations of
        `diffusers.DDPMScheduler.step` (its steps 1 and 4) and of its `_get_variance`, in their order."""
        sqrt_alpha_prod, sqrt_beta_prod = sqrt_alphas(alpha_prod_t)
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t  # β_t of the step: 1 − ᾱ_t/ᾱ_{t'}
        return cls(
            sqrt_alpha_prod=sqrt_alpha_prod,
            sqrt_beta_prod=sqrt_beta_prod,
            pred_original_sample_coeff=(alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t,  # eq. 7
            current_sample_coeff=current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t,  # eq. 7
            beta=current_beta_t,
            posterior_variance=torch.clamp(beta_prod_t_prev / beta_prod_t * current_beta_t, min=1e-20),  # eq. 7
            large_variance=current_beta_t,
        )


def original_sample(
    prediction_type: str, c: StepCoefficients, model_output: torch.Tensor, sample: torch.Tensor
) -> torch.Tensor:
    """x̂_0 from the network's output at x_t, unclipped, for every `prediction_type` (Table 2), in the operations of
    diffusers' DDPM and DDIM steps. `c` needs √ᾱ_t and √(1 − ᾱ_t) (and μ̃_t's factors for "mean")."""
    if prediction_type == "epsilon":  # x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ) / √ᾱ_t   (eq. 15)
        return (sample - c.sqrt_beta_prod * model_output) / c.sqrt_alpha_prod
    if prediction_type == "sample":
        return model_output
    if prediction_type == "v_prediction":  # x̂_0 = √ᾱ_t x_t − √(1 − ᾱ_t) v   (Salimans & Ho 2022)
        return c.sqrt_alpha_prod * sample - c.sqrt_beta_prod * model_output
    # "mean": μ̃_t (eq. 7) solved for x_0
    return (model_output - c.current_sample_coeff * sample) / c.pred_original_sample_coeff


def predicted_noise(
    prediction_type: str, c: StepCoefficients, model_output: torch.Tensor, sample: torch.Tensor,
    pred_original_sample: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """ε̂ of the network's output at x_t, in the operations of diffusers' DDIM step: ε_θ itself, or x_t = √ᾱ_t x̂_0 +
    √(1 − ᾱ_t) ε (eq. 4) solved for ε, or for v-prediction ε = √ᾱ_t v + √(1 − ᾱ_t) x_t."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return c.sqrt_alpha_prod * model_output + c.sqrt_beta_prod * sample
    return (sample - c.sqrt_alpha_prod * pred_original_sample) / c.sqrt_beta_prod


@dataclass
class ReverseVariance:
    """σ_t² of p_θ(x_{t'} | x_t), held in the form it was computed in: as a variance or as its logarithm.

    diffusers rounds the two forms differently (σ_t = (σ_t²)^½ or exp(½ log σ_t²)); sampling takes σ_t from the form
    at hand, as diffusers does, and the bound takes log σ_t².
    """

    variance: torch.Tensor | None = None
    log_variance: torch.Tensor | None = None

    def std(self) -> torch.Tensor:
        """σ_t, the factor of z in x_{t'} = μ_θ + σ_t z."""
        return self.variance ** (0.5) if self.log_variance is None else torch.exp(0.5 * self.log_variance)

    def log(self) -> torch.Tensor:
        """log σ_t² (a variance is kept above 1e-20 first, as a predicted one may be 0)."""
        return torch.log(self.variance.clamp(min=1e-20)) if self.log_variance is None else self.log_variance


@dataclass
class ModelPrediction:
    """The reverse-process Gaussian p_θ(x_{t−1} | x_t) that a model output defines (eq. 1).

    Attributes:
        mean: μ_θ(x_t, t).
        variance: σ_t², broadcastable to `mean`.
        log_variance: log σ_t², broadcastable to `mean`.
        pred_original_sample: the model's x̂_0 (eq. 15 for ε-prediction), clipped or thresholded if asked.
    """

    mean: torch.Tensor
    variance: torch.Tensor
    log_variance: torch.Tensor
    pred_original_sample: torch.Tensor


def respaced_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """The kept timesteps of Nichol & Dhariwal 2021 (§4, `space_timesteps` with one section), descending.

    `num_steps` evenly spaced indices of 0 … T−1, always keeping the first (x_0's decoder step) and the last
    (the step that starts from the prior N(0, I)).
    """
    if num_steps == 1:
        return [num_train_timesteps - 1]
    stride = (num_train_timesteps - 1) / (num_steps - 1)
    kept, position = [], 0.0
    for _ in range(num_steps):
        kept.append(round(position))
        position += stride
    return sorted(set(kept), reverse=True)


def _is_integer(value: object) -> bool:
    """An int as a JSON config holds it: not a bool, a float such as 10.0, or a string such as "10"."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_config_types(config: FrozenDict) -> None:
    """Refuse a field of the wrong type (a JSON config may hold anything): T an integer ≥ 1, the names one of their
    choices, the switches booleans, the other scalars finite numbers."""
    T = config.num_train_timesteps
    if not _is_integer(T) or T < 1:
        raise ValueError(f"num_train_timesteps must be an integer ≥ 1, got {T!r}.")
    for field, allowed in (
        ("beta_schedule", BETA_SCHEDULES),
        ("variance_type", VARIANCE_TYPES),
        ("prediction_type", PREDICTION_TYPES),
        ("timestep_spacing", TIMESTEP_SPACINGS),
    ):
        value = getattr(config, field)
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"Unknown {field} {value!r}; choose one of {list(allowed)}.")
    for field in ("clip_sample", "thresholding", "rescale_betas_zero_snr"):
        if not isinstance(getattr(config, field), (bool, np.bool_)):
            raise ValueError(f"{field} must be true or false, got {getattr(config, field)!r}.")
    for field in ("beta_start", "beta_end", "dynamic_thresholding_ratio", "clip_sample_range", "sample_max_value"):
        value = getattr(config, field)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            raise ValueError(f"{field} must be a number, got {value!r}.")
        if not np.isfinite(value):
            raise ValueError(f"{field} must be finite, got {value!r}.")


class DDPMScheduler(SchedulerMixin, ConfigMixin):
    """The DDPM scheduler of Ho et al. 2020, a drop-in `diffusers.DDPMScheduler` that also computes the bound.

    The configuration has exactly the fields of `diffusers.DDPMScheduler`, with the same names and defaults, so a
    `scheduler_config.json` written by either class loads into the other. Beyond diffusers:

    * `prediction_type="mean"`: the model predicts the posterior mean μ̃ directly (the paper's Table 2);
    * `variance_type="fixed_large_log"` works (σ_t² = β_t through its logarithm; diffusers returns NaN there);
    * `q_posterior` (eq. 6-7), `p_mean_variance` (eq. 1, 11), `vlb_terms` and `prior_bpd` (eq. 5, 13) in bits per
      dimension, `training_loss` for L_simple (eq. 14) and the true bound L_vlb (the last three from
      `ddpm_hf.likelihood`);
    * `set_timesteps(n, respace=True)`: sampling on a respaced chain (Nichol & Dhariwal 2021, §4).

    Args:
        num_train_timesteps: T, the number of diffusion steps the model was trained with.
        beta_start: β_1 of the linear, scaled-linear and sigmoid schedules (the paper: 1e-4).
        beta_end: β_T of those schedules (the paper: 0.02).
        beta_schedule: "linear" (the paper), "scaled_linear", "squaredcos_cap_v2" (Nichol & Dhariwal's cosine),
            "sigmoid" or "laplace".
        trained_betas: an explicit array of T betas, used instead of the schedule.
        variance_type: σ_t² of the reverse process: "fixed_small" (β̃_t), "fixed_large" (β_t), their "_log" forms,
            or "learned" / "learned_range" for a model with twice the channels.
        clip_sample: clip x̂_0 to [−clip_sample_range, clip_sample_range] before the posterior mean (the paper's
            sampler clips to [−1, 1]).
        prediction_type: "epsilon" (ε_θ, the paper's choice), "sample" (x_0), "v_prediction" or "mean" (μ̃).
        thresholding: dynamic thresholding of x̂_0 (Saharia et al. 2022) instead of clipping.
        dynamic_thresholding_ratio: the percentile of dynamic thresholding.
        clip_sample_range: the clipping bound.
        sample_max_value: the largest threshold of dynamic thresholding.
        timestep_spacing: how `set_timesteps(n)` strides the T steps: "leading", "trailing" or "linspace".
        steps_offset: added to the "leading" timesteps.
        rescale_betas_zero_snr: rescale the betas to zero terminal SNR (Lin et al. 2023).
    """

    _compatibles = list(_DiffusersDDPMScheduler._compatibles)
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace"] = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: Literal[
            "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"
        ] = "fixed_small",
        clip_sample: bool = True,
        prediction_type: Literal["epsilon", "sample", "v_prediction", "mean"] = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: Literal["linspace", "leading", "trailing"] = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        self._validate_config()
        self.betas = self._make_betas()
        if rescale_betas_zero_snr:
            self.betas = rescale_zero_terminal_snr(self.betas)

        # The float32 tables of the sampler, exactly as diffusers builds them.
        self.alphas = 1.0 - self.betas  # α_t
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)  # ᾱ_t
        self.one = torch.tensor(1.0)
        self.init_noise_sigma = 1.0  # x_T ~ N(0, I)

        # The likelihood's tables: the steps t → t − 1 of the T-step chain in float64, named; and as rows for lookups.
        self.chain = self._chain_tables()
        self._chain_rows = torch.stack([getattr(self.chain, f.name) for f in fields(self.chain)], dim=1)
        self._chain_steps: list[StepCoefficients] | None = None  # `chain_coefficients`' per-step views, made on use

        # Set by `set_timesteps`.
        self.custom_timesteps = False
        self.num_inference_steps = None
        self.respaced = False
        self.timesteps = torch.from_numpy(np.arange(0, num_train_timesteps)[::-1].copy())
        self.variance_type = variance_type

    def _chain_tables(self) -> StepCoefficients:
        """The coefficients of the T steps t → t − 1 in float64, with σ_1² of the decoder step t = 0 (paper: t = 1).

        β̃ is 0 at the decoder step (x_0 is given): its logarithm is −∞ and a decoder of variance 0 has no
        likelihood. There, as in the paper's reference code (`diffusion_utils_2.py`) and in improved-diffusion, σ_1²
        is β̃ of the next step for "fixed_small" and for "fixed_large" alike; the paper's text writes σ_1² = β_1 for
        the latter. The code's choice is kept because the paper's likelihoods (Tables 1, 2 and 4) were measured
        with it; any σ_1² gives a valid bound. "learned_range" still reaches up to log β_1 there, as in
        improved-diffusion. Sampling is unaffected: the step to x_0 adds no noise. (With T = 1: σ_1² = β_1.)
        """
        alphas_cumprod = torch.cumprod(1.0 - self.betas.double(), dim=0)
        previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])  # ᾱ_{t−1}, with ᾱ_{−1} = 1
        chain = StepCoefficients.between(alphas_cumprod, previous)
        decoder_variance = (chain.posterior_variance[1:2] if len(previous) > 1 else chain.beta[:1]).clone()
        chain.posterior_variance = torch.cat([decoder_variance, chain.posterior_variance[1:]])
        chain.large_variance = torch.cat([decoder_variance, chain.beta[1:]])
        return chain

    # ---------------------------------------------------------------------------------------------------------
    # Configuration
    # ---------------------------------------------------------------------------------------------------------

    def _validate_config(self) -> None:
        """Refuse a configuration the tables cannot be built from, with the field named: a config file holding a
        string, a float or a negative number where diffusers writes an integer would otherwise fail deep in torch, or
        sample past the tables' end. Every configuration diffusers writes passes."""
        config = self.config
        _check_config_types(config)
        T = config.num_train_timesteps
        if config.trained_betas is not None:
            try:
                betas = np.asarray(config.trained_betas, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"trained_betas must be a list of numbers, got {config.trained_betas!r}.") from None
            if betas.ndim != 1 or len(betas) != T:
                raise ValueError(
                    f"trained_betas must be a list of num_train_timesteps={T} values, got shape {betas.shape}."
                )
            if not np.all((betas > 0) & (betas <= 1)):
                raise ValueError("trained_betas must all lie in (0, 1].")
        elif config.beta_schedule in ("linear", "scaled_linear", "sigmoid"):
            for field in ("beta_start", "beta_end"):
                value = getattr(config, field)
                if not 0.0 < value < 1.0:
                    raise ValueError(f"{field} must lie in (0, 1), got {value!r}.")
            if config.beta_start >= config.beta_end:
                raise ValueError(
                    f"beta_start must be smaller than beta_end, got beta_start={config.beta_start} and "
                    f"beta_end={config.beta_end}."
                )
        if not config.clip_sample_range > 0:
            raise ValueError(f"clip_sample_range must be positive, got {config.clip_sample_range!r}.")
        if not 0.0 < config.dynamic_thresholding_ratio <= 1.0:
            raise ValueError(
                f"dynamic_thresholding_ratio must lie in (0, 1], got {config.dynamic_thresholding_ratio!r}."
            )
        # "leading" spacing adds the offset to timesteps up to T − T/n: an offset ≥ T indexes past every table.
        if not _is_integer(config.steps_offset) or not 0 <= config.steps_offset < T:
            raise ValueError(
                f"steps_offset must be an integer in [0, num_train_timesteps={T}), got {config.steps_offset!r}."
            )

    def _make_betas(self) -> torch.Tensor:
        """β_1 … β_T of the configured schedule (the paper: linear from 1e-4 to 0.02, T = 1000; §4)."""
        config = self.config
        T = config.num_train_timesteps
        if config.trained_betas is not None:
            return torch.tensor(config.trained_betas, dtype=torch.float32)
        if config.beta_schedule == "linear":
            return torch.linspace(config.beta_start, config.beta_end, T, dtype=torch.float32)
        if config.beta_schedule == "scaled_linear":
            return torch.linspace(config.beta_start**0.5, config.beta_end**0.5, T, dtype=torch.float32) ** 2
        if config.beta_schedule == "squaredcos_cap_v2":
            return betas_for_alpha_bar(T)
        if config.beta_schedule == "laplace":
            return betas_for_alpha_bar(T, alpha_transform_type="laplace")
        # "sigmoid" (GeoDiff)
        return torch.sigmoid(torch.linspace(-6, 6, T)) * (config.beta_end - config.beta_start) + config.beta_start

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # ---------------------------------------------------------------------------------------------------------
    # The timesteps of the reverse chain
    # ---------------------------------------------------------------------------------------------------------

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """DDPM feeds x_t to the model unscaled; present for interchangeability with other schedulers."""
        return sample

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
        respace: bool = False,
    ) -> None:
        """Choose the timesteps of the reverse chain (run before sampling).

        Args:
            num_inference_steps: the number of sampling steps n ≤ T. Without `respace`, the steps are strided over
                0 … T−1 by `config.timestep_spacing` exactly as `diffusers.DDPMScheduler` does.
            device: where `self.timesteps` is placed.
            timesteps: explicit, strictly descending timesteps in [0, T) instead of `num_inference_steps`.
            respace: sample on the respaced chain of Nichol & Dhariwal 2021, §4: keep the evenly spaced
                subsequence S of 0 … T−1 that includes both ends (or `timesteps`, if given) and use the betas
                recomputed for it, β'_{s_i} = 1 − ᾱ_{s_i} / ᾱ_{s_{i−1}} (available as `self.respaced_betas`). The
                chain then starts at the trained prior's step T−1 and ends with the decoder step 0, which the
                strided "leading" spacing does not do (it starts at T − T/n).

        Every step (strided or respaced) moves from x_t to x_{t'}, t' the next kept timestep, with the posterior
        of eq. 6-7 written in ᾱ_t and ᾱ_{t'}: that is what recomputing the betas for the kept subsequence means.
        """
        T = self.config.num_train_timesteps
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("Pass either num_inference_steps or timesteps to set_timesteps, not both.")
        if num_inference_steps is None and timesteps is None:
            raise ValueError("set_timesteps needs num_inference_steps or timesteps.")

        if timesteps is not None:
            timesteps = [int(t) for t in timesteps]
            if len(timesteps) == 0:
                raise ValueError("timesteps must not be empty.")
            for i in range(1, len(timesteps)):
                if timesteps[i] >= timesteps[i - 1]:
                    raise ValueError(
                        f"timesteps must be strictly descending, but timesteps[{i}]={timesteps[i]} follows "
                        f"timesteps[{i - 1}]={timesteps[i - 1]}."
                    )
            if timesteps[0] >= T or timesteps[-1] < 0:
                raise ValueError(f"timesteps must lie in [0, {T}) (num_train_timesteps={T}), got {timesteps}.")
            schedule = np.array(timesteps, dtype=np.int64)
            self.custom_timesteps = True
            self.num_inference_steps = len(timesteps)
        else:
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
                raise ValueError(f"num_inference_steps must be an integer, got {num_inference_steps!r}.")
            if num_inference_steps < 1:
                raise ValueError(f"num_inference_steps must be ≥ 1, got {num_inference_steps}.")
            if num_inference_steps > T:
                raise ValueError(
                    f"num_inference_steps={num_inference_steps} is larger than num_train_timesteps={T}: the model "
                    f"was trained on {T} steps."
                )
            self.num_inference_steps = num_inference_steps
            self.custom_timesteps = False
            if respace:
                schedule = np.array(respaced_timesteps(T, num_inference_steps), dtype=np.int64)
            else:
                schedule = self._strided_timesteps(num_inference_steps)

        self.respaced = respace
        self.timesteps = torch.from_numpy(schedule).to(device)
        self._previous = {int(t): int(s) for t, s in zip(schedule, list(schedule[1:]) + [-1], strict=True)}

    def _strided_timesteps(self, n: int) -> np.ndarray:
        """diffusers' `timestep_spacing` (Lin et al. 2023, Table 2), bit for bit."""
        config = self.config
        T = config.num_train_timesteps
        if config.timestep_spacing == "linspace":
            return np.linspace(0, T - 1, n).round()[::-1].copy().astype(np.int64)
        if config.timestep_spacing == "leading":
            step_ratio = T // n
            timesteps = (np.arange(0, n) * step_ratio).round()[::-1].copy().astype(np.int64)
            return timesteps + config.steps_offset
        step_ratio = T / n  # "trailing"
        return np.round(np.arange(T, 0, -step_ratio)).astype(np.int64) - 1

    @property
    def respaced_betas(self) -> torch.Tensor:
        """β' of the current chain in ascending time order: 1 − ᾱ_{s_i} / ᾱ_{s_{i−1}}, with ᾱ before the first = 1."""
        kept = self.timesteps.flip(0).cpu().long()
        alphas_cumprod = self.alphas_cumprod[kept].double()
        previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        return (1.0 - alphas_cumprod / previous).float()

    def previous_timestep(self, timestep: int | torch.Tensor) -> int | torch.Tensor:
        """The timestep the reverse chain moves to from `timestep` (−1 after the last step)."""
        if self.custom_timesteps or self.num_inference_steps:
            t = int(timestep)
            if t not in self._previous:
                raise ValueError(
                    f"timestep {t} is not one of the {len(self._previous)} timesteps set by set_timesteps."
                )
            return torch.tensor(self._previous[t])
        return timestep - 1

    def _threshold_sample(self, sample: torch.Tensor) -> torch.Tensor:
        """Dynamic thresholding of x̂_0 (Saharia et al. 2022, §2.3): clamp each image to [−s, s] and divide by s, s the
        `dynamic_thresholding_ratio` percentile of |x̂_0| clamped to [1, `sample_max_value`]."""
        dtype = sample.dtype
        batch_size = sample.shape[0]
        if dtype not in (torch.float32, torch.float64):
            sample = sample.float()
        flat = sample.reshape(batch_size, -1)
        s = torch.quantile(flat.abs(), self.config.dynamic_thresholding_ratio, dim=1)
        s = torch.clamp(s, min=1, max=self.config.sample_max_value).unsqueeze(1)
        return (torch.clamp(flat, -s, s) / s).reshape(sample.shape).to(dtype)

    def _clip(self, pred_original_sample: torch.Tensor) -> torch.Tensor:
        if self.config.thresholding:
            return self._threshold_sample(pred_original_sample)
        if self.config.clip_sample:
            return pred_original_sample.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        return pred_original_sample

    def _split_variance(
        self, model_output: torch.Tensor, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Split a learned-variance model's output (2C channels) into its mean part and its variance part."""
        if model_output.shape[1] == sample.shape[1] * 2 and self.config.variance_type in ("learned", "learned_range"):
            mean_part, variance_part = torch.split(model_output, sample.shape[1], dim=1)
            return mean_part, variance_part
        if self.config.variance_type in ("learned", "learned_range"):
            raise ValueError(
                f"variance_type={self.config.variance_type!r} needs a model output of 2×{sample.shape[1]} channels, "
                f"got {model_output.shape[1]}."
            )
        return model_output, None

    # ---------------------------------------------------------------------------------------------------------
    # The coefficients of a step: float32 for sampling, float64 for the likelihood
    # ---------------------------------------------------------------------------------------------------------

    def step_coefficients(self, timestep: int, prev_timestep: int | None = None) -> StepCoefficients:
        """The scalars of the ancestral step t → t' (t' the next timestep of the chain, −1 after the last, with
        ᾱ_{−1} = 1), in float32 from diffusers' ᾱ table, as `diffusers.DDPMScheduler.step` computes them."""
        t = int(timestep)
        prev_t = int(self.previous_timestep(t)) if prev_timestep is None else int(prev_timestep)
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        return StepCoefficients.between(self.alphas_cumprod[t], alpha_prod_t_prev)

    def chain_coefficients(self, timesteps: int | torch.Tensor, like: torch.Tensor) -> StepCoefficients:
        """The float64 coefficients of the T-step chain (`self.chain`) at t, cast to `like`'s dtype and device: 0-dim
        tensors for an int t, or shaped (B, 1, 1, …) against `like` for B timesteps. The likelihood's one lookup."""
        if self._chain_rows.device != like.device:
            self._chain_rows = self._chain_rows.to(like.device)
        if isinstance(timesteps, int):
            if not 0 <= timesteps < self.config.num_train_timesteps:
                raise ValueError(f"timesteps must lie in [0, {self.config.num_train_timesteps}), got {timesteps}.")
            steps = self._chain_steps  # each step's 0-dim views, made once per dtype and device: the bound asks T times
            if steps is None or steps[0].beta.dtype != like.dtype or steps[0].beta.device != like.device:
                rows = self._chain_rows.to(like.dtype).unbind(0)
                steps = self._chain_steps = [StepCoefficients(*row.unbind(0)) for row in rows]
            return steps[timesteps]
        t = timesteps.to(like.device).long().flatten()
        rows = self._chain_rows[t].to(like.dtype).reshape(len(t), -1, *([1] * (like.ndim - 1)))
        return StepCoefficients(*rows.unbind(1))

    def noise_scales(self) -> torch.Tensor:
        """σ_t of every step of the current chain, in the order of `self.timesteps` (0 for the last step to x_0, which
        adds no noise). Only for the fixed variances: a learned σ_t depends on the network's output."""
        if self.config.variance_type in ("learned", "learned_range"):
            raise ValueError(f"variance_type={self.config.variance_type!r} has no σ_t before the network runs.")
        scales = []
        for t in self.timesteps.tolist():
            scales.append(self.reverse_variance(self.step_coefficients(t)).std() if t > 0 else torch.zeros(()))
        return torch.stack(scales)

    # ---------------------------------------------------------------------------------------------------------
    # x̂_0, μ̃_t and σ_t², each written once: for the sampler's float32 and the likelihood's float64 coefficients
    # ---------------------------------------------------------------------------------------------------------

    def original_sample(self, c: StepCoefficients, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """x̂_0 from the network's output at x_t, unclipped, for this scheduler's `prediction_type` (Table 2)."""
        return original_sample(self.config.prediction_type, c, model_output, sample)

    def posterior_mean(self, c: StepCoefficients, original_sample: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """μ̃_t(x_t, x_0), the mean of q(x_{t'} | x_t, x_0)   (eq. 7)."""
        return c.pred_original_sample_coeff * original_sample + c.current_sample_coeff * sample

    def reverse_mean(
        self, c: StepCoefficients, model_output: torch.Tensor, sample: torch.Tensor, clip: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """μ_θ(x_t, t) and x̂_0 of a network output (its mean part): μ_θ = μ̃_t(x_t, x̂_0) (eq. 7 with x̂_0, which is
        eq. 11 for an unclipped ε-prediction), or the output itself for μ̃-prediction. `clip`: clip or threshold x̂_0
        as configured first (sampling does; the bound does not)."""
        pred_original_sample = self.original_sample(c, model_output, sample)
        if clip:
            pred_original_sample = self._clip(pred_original_sample)
        if self.config.prediction_type == "mean":
            return model_output, pred_original_sample
        return self.posterior_mean(c, pred_original_sample, sample), pred_original_sample

    def reverse_variance(self, c: StepCoefficients, predicted_variance: torch.Tensor | None = None) -> ReverseVariance:
        """σ_t² of p_θ(x_{t'} | x_t) by `variance_type` (§3.2), in the form diffusers' `_get_variance` computes it."""
        variance_type = self.config.variance_type
        if variance_type == "fixed_small":  # σ_t² = β̃_t
            return ReverseVariance(variance=c.posterior_variance)
        if variance_type == "fixed_small_log":  # the same, through its logarithm
            return ReverseVariance(log_variance=torch.log(c.posterior_variance))
        if variance_type == "fixed_large":  # σ_t² = β_t
            return ReverseVariance(variance=c.large_variance)
        if variance_type == "fixed_large_log":
            return ReverseVariance(log_variance=torch.log(c.large_variance))
        if variance_type == "learned":  # the network's σ_t² itself (diffusers' convention)
            return ReverseVariance(variance=predicted_variance)
        # "learned_range": log σ_t² = v log β_t + (1 − v) log β̃_t, v = (output + 1) / 2 (Nichol & Dhariwal 2021, eq. 15)
        frac = (predicted_variance + 1) / 2
        return ReverseVariance(log_variance=frac * torch.log(c.beta) + (1 - frac) * torch.log(c.posterior_variance))

    def reverse_gaussian(
        self, c: StepCoefficients, model_output: torch.Tensor, sample: torch.Tensor, clip_denoised: bool = False
    ) -> ModelPrediction:
        """p_θ(x_{t'} | x_t) = N(μ_θ, σ_t² I) (eq. 1) of a network output (2C channels with a learned variance)."""
        model_output, predicted_variance = self._split_variance(model_output, sample)
        mean, pred_original_sample = self.reverse_mean(c, model_output, sample, clip_denoised)
        log_variance = self.reverse_variance(c, predicted_variance).log()
        return ModelPrediction(mean, torch.exp(log_variance), log_variance, pred_original_sample)

    # ---------------------------------------------------------------------------------------------------------
    # The ancestral step (Algorithm 2) and the forward process (eq. 4)
    # ---------------------------------------------------------------------------------------------------------

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> DDPMSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One step of ancestral sampling, x_t → x_{t'} ~ p_θ(x_{t'} | x_t) (Algorithm 2, line 4).

        With the full chain t' = t − 1. After `set_timesteps`, t' is the next kept timestep and the step uses the
        posterior of the two-step chain ᾱ_t → ᾱ_{t'}, i.e. β_t replaced by 1 − ᾱ_t / ᾱ_{t'}.

        Args:
            model_output: the network's output at (x_t, t): ε_θ, x̂_0, v or μ̃ by `prediction_type` (with 2C
                channels when the variance is learned).
            timestep: t.
            sample: x_t.
            generator: the source of z ~ N(0, I); a list gives one generator per image. One draw of the sample's
                shape is made when t > 0 and none at t = 0, as in diffusers.
            return_dict: return a `DDPMSchedulerOutput` rather than a tuple.

        Returns:
            `prev_sample` x_{t'} and `pred_original_sample` x̂_0.
        """
        t = int(timestep)
        prev_t = int(self.previous_timestep(t))
        model_output, predicted_variance = self._split_variance(model_output, sample)

        # 1. ᾱ_t, ᾱ_{t'} and the step's coefficients (float32, as diffusers computes them)
        c = self.step_coefficients(t, prev_t)
        # 2-5. x̂_0 (eq. 15), clipped or thresholded; μ_θ = μ̃_t(x_t, x̂_0)   (eq. 7)
        pred_prev_sample, pred_original_sample = self.reverse_mean(c, model_output, sample, clip=True)
        # 6. x_{t'} = μ_θ + σ_t z, z ~ N(0, I), for t > 0   (Algorithm 2, lines 3-4)
        if t > 0:
            noise = randn_tensor(
                model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
            )
            pred_prev_sample = pred_prev_sample + self.reverse_variance(c, predicted_variance).std() * noise

        if not return_dict:
            return (pred_prev_sample, pred_original_sample)
        return DDPMSchedulerOutput(prev_sample=pred_prev_sample, pred_original_sample=pred_original_sample)

    def _sqrt_alphas(self, like: torch.Tensor, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """√ᾱ_t and √(1 − ᾱ_t) shaped against `like`: from diffusers' float32 table as diffusers computes them, or
        from the float64 chain for float64 input (the precision of the likelihood)."""
        if like.dtype == torch.float64:
            c = self.chain_coefficients(timesteps, like)
            return c.sqrt_alpha_prod, c.sqrt_beta_prod
        self.alphas_cumprod = self.alphas_cumprod.to(device=like.device)
        alpha_prod = self.alphas_cumprod.to(dtype=like.dtype)[timesteps.to(like.device)].flatten()
        shape = (-1, *([1] * (like.ndim - 1)))
        sqrt_alpha_prod, sqrt_beta_prod = sqrt_alphas(alpha_prod)
        return sqrt_alpha_prod.reshape(shape), sqrt_beta_prod.reshape(shape)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor
    ) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, a draw from q(x_t | x_0) (eq. 4; Algorithm 1, line 5)."""
        return self.diffuse(self._sqrt_alphas(original_samples, timesteps), original_samples, noise)

    @staticmethod
    def diffuse(
        sqrt_alphas: tuple[torch.Tensor, torch.Tensor], original_samples: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε   (eq. 4), given (√ᾱ_t, √(1 − ᾱ_t)) already looked up."""
        sqrt_alpha_prod, sqrt_one_minus_alpha_prod = sqrt_alphas
        return sqrt_alpha_prod * original_samples + sqrt_one_minus_alpha_prod * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor) -> torch.Tensor:
        """v = √ᾱ_t ε − √(1 − ᾱ_t) x_0, the target of v-prediction (Salimans & Ho 2022)."""
        sqrt_alpha_prod, sqrt_one_minus_alpha_prod = self._sqrt_alphas(sample, timesteps)
        return sqrt_alpha_prod * noise - sqrt_one_minus_alpha_prod * sample

    # ---------------------------------------------------------------------------------------------------------
    # The likelihood on the full chain of T steps, batched over timesteps (the bound's terms: `ddpm_hf.likelihood`)
    # ---------------------------------------------------------------------------------------------------------

    def _check_timesteps(self, timesteps: torch.Tensor) -> torch.Tensor:
        timesteps = torch.as_tensor(timesteps).long()
        T = self.config.num_train_timesteps
        if timesteps.numel() and (timesteps.min() < 0 or timesteps.max() >= T):
            raise ValueError(f"timesteps must lie in [0, {T}), got values from {timesteps.min()} to {timesteps.max()}.")
        return timesteps

    def q_posterior(
        self, original_samples: torch.Tensor, noisy_samples: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The forward-process posterior q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) (eq. 6-7).

        Returns:
            (μ̃_t(x_t, x_0), β̃_t, log β̃_t), the last two shaped (B, 1, 1, 1). At t = 0, where β̃ = 0, both are the
            decoder step's (`self.chain`): β̃ of the next step, as in the paper's code.
        """
        c = self.chain_coefficients(self._check_timesteps(timesteps), noisy_samples)
        mean = self.posterior_mean(c, original_samples, noisy_samples)
        return mean, c.posterior_variance, torch.log(c.posterior_variance)

    def predict_original_sample(
        self, model_output: torch.Tensor, noisy_samples: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """x̂_0 from the model output for a batch of timesteps, unclipped, for every `prediction_type` (Table 2)."""
        c = self.chain_coefficients(self._check_timesteps(timesteps), noisy_samples)
        return self.original_sample(c, model_output, noisy_samples)

    def p_mean_variance(
        self,
        model_output: torch.Tensor,
        noisy_samples: torch.Tensor,
        timesteps: torch.Tensor,
        clip_denoised: bool = False,
    ) -> ModelPrediction:
        """The reverse-process Gaussian p_θ(x_{t−1} | x_t) = N(μ_θ, σ_t² I) of a model output (eq. 1).

        μ_θ is μ̃_t(x_t, x̂_0) for ε-, x_0- and v-prediction (eq. 11 is the ε case) and the output itself for
        μ̃-prediction. σ_t² follows `variance_type`: β̃_t ("fixed_small*"), β_t ("fixed_large*"), both with the
        decoder step's σ_1² at t = 0 (see `self.chain`), or the model's (learned variants).

        Args:
            model_output: the network output for x_t at `timesteps` (2C channels with a learned variance).
            noisy_samples: x_t.
            timesteps: t, one per image.
            clip_denoised: clip or threshold x̂_0 as configured before forming μ_θ (what sampling does);
                the bound is evaluated without it.
        """
        c = self.chain_coefficients(self._check_timesteps(timesteps), noisy_samples)
        return self.reverse_gaussian(c, model_output, noisy_samples, clip_denoised)

    def vlb_terms(
        self,
        model_output: torch.Tensor,
        original_samples: torch.Tensor,
        noisy_samples: torch.Tensor,
        timesteps: torch.Tensor,
    ) -> torch.Tensor:
        """L_{t−1} per image in bits/dim, or L_0 where t = 0 (eq. 5, 13): `ddpm_hf.likelihood.vlb_terms`."""
        return likelihood.vlb_terms(self, model_output, original_samples, noisy_samples, timesteps)

    def prior_bpd(self, original_samples: torch.Tensor) -> torch.Tensor:
        """L_T per image in bits/dim (eq. 5): `ddpm_hf.likelihood.prior_bpd`."""
        return likelihood.prior_bpd(self, original_samples)

    def training_target(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """What the network regresses onto (Table 2): `ddpm_hf.likelihood.training_target`."""
        return likelihood.training_target(self, original_samples, noise, timesteps)

    def training_loss(
        self,
        model_output: torch.Tensor,
        original_samples: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        loss_type: Literal["simple", "vlb"] = "simple",
    ) -> torch.Tensor:
        """The per-image loss L_simple (eq. 14) or L_vlb (Table 2): `ddpm_hf.likelihood.training_loss`."""
        return likelihood.training_loss(self, model_output, original_samples, noise, timesteps, loss_type)
