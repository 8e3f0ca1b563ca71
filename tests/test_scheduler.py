"""Specification of `ddpm_hf.DDPMScheduler`: diffusers parity, the paper's equations, respacing and bad input."""

from __future__ import annotations

import inspect
import math

import diffusers
import numpy as np
import pytest
import torch

from ddpm_hf import DDPMScheduler
from ddpm_hf.scheduler import PREDICTION_TYPES, respaced_timesteps

SHAPE = (2, 3, 4, 4)


def fake_model(sample: torch.Tensor, t: int | torch.Tensor, channels: int = 3) -> torch.Tensor:
    """A deterministic stand-in for a network: a smooth function of (x_t, t) with values in a sane range."""
    t = float(t)
    out = torch.sin(1.7 * sample + t / 97.0) * 0.8 + 0.1 * torch.cos(
        torch.arange(sample.numel()).reshape(sample.shape) + t
    )
    if channels == 2 * sample.shape[1]:
        out = torch.cat([out, torch.tanh(sample + t / 300.0)], dim=1)
    return out.to(sample.dtype)


def run_both(config: dict, n: int | None = None, timesteps: list[int] | None = None, generators: int = 0):
    """Run the same reverse chain through ours and diffusers' scheduler; return both trajectories and generators."""
    ours, theirs = DDPMScheduler(**config), diffusers.DDPMScheduler(**config)
    if n is not None or timesteps is not None:
        ours.set_timesteps(n, timesteps=timesteps)
        theirs.set_timesteps(n, timesteps=timesteps)
    assert torch.equal(ours.timesteps, theirs.timesteps)
    learned = config.get("variance_type") in ("learned", "learned_range")
    if generators:
        gen_a = [torch.Generator().manual_seed(10 + k) for k in range(generators)]
        gen_b = [torch.Generator().manual_seed(10 + k) for k in range(generators)]
    else:
        gen_a, gen_b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    if learned and config.get("variance_type") == "learned":
        x, y = x.abs(), y.abs()
    trajectory = []
    for t in ours.timesteps:
        out = fake_model(x, t, channels=6 if learned else 3)
        if config.get("variance_type") == "learned":  # diffusers' "learned" reads σ² directly from the output
            out[:, 3:] = out[:, 3:].abs() * 1e-2
        a = ours.step(out, t, x, generator=gen_a)
        b = theirs.step(out.clone(), t, y, generator=gen_b)
        trajectory.append((a, b))
        x, y = a.prev_sample, b.prev_sample
    return trajectory, gen_a, gen_b


SHARED_OPTIONS = [
    {},
    {"variance_type": "fixed_large"},
    {"variance_type": "fixed_small_log"},
    {"variance_type": "learned"},
    {"variance_type": "learned_range"},
    {"prediction_type": "sample"},
    {"prediction_type": "v_prediction"},
    {"clip_sample": False},
    {"clip_sample_range": 0.5},
    {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "sigmoid"},
    {"beta_schedule": "laplace"},
    {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"},
    {"trained_betas": np.linspace(1e-3, 0.05, 1000).tolist()},
    {"beta_start": 0.0002, "beta_end": 0.03},
]


def config_id(config: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items() if k != "trained_betas") or (
        "trained_betas" if config else "default"
    )


class TestConfigInteroperability:
    def test_constructor_has_the_same_parameter_names_and_defaults_as_diffusers(self):
        ours = inspect.signature(DDPMScheduler.__init__).parameters
        theirs = inspect.signature(diffusers.DDPMScheduler.__init__).parameters
        assert list(ours) == list(theirs)
        assert {name: p.default for name, p in ours.items()} == {name: p.default for name, p in theirs.items()}

    @pytest.mark.parametrize(
        "writer, reader", [(DDPMScheduler, diffusers.DDPMScheduler), (diffusers.DDPMScheduler, DDPMScheduler)]
    )
    def test_a_config_file_written_by_either_class_loads_into_the_other(self, tmp_path, writer, reader):
        written = writer(num_train_timesteps=500, beta_end=0.03, variance_type="fixed_large", clip_sample=False)
        written.save_pretrained(tmp_path)
        loaded = reader.from_pretrained(tmp_path)
        strip = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
        assert strip(loaded.config) == strip(written.config)
        assert torch.equal(loaded.alphas_cumprod, written.alphas_cumprod)

    def test_diffusers_ddim_scheduler_builds_from_our_config(self):
        ddim = diffusers.DDIMScheduler.from_config(DDPMScheduler(beta_end=0.03).config)
        assert ddim.config.beta_end == 0.03
        assert torch.equal(ddim.alphas_cumprod, DDPMScheduler(beta_end=0.03).alphas_cumprod)

    def test_the_paper_schedule_is_the_default(self):
        scheduler = DDPMScheduler()
        assert len(scheduler) == 1000
        assert scheduler.betas[0].item() == pytest.approx(1e-4) and scheduler.betas[-1].item() == pytest.approx(0.02)
        np.testing.assert_allclose(
            scheduler.alphas_cumprod.numpy(), np.cumprod(1 - np.linspace(1e-4, 0.02, 1000)), rtol=1e-5
        )


class TestDiffusersParity:
    @pytest.mark.parametrize(
        "config",
        SHARED_OPTIONS,
        ids=lambda c: (
            ",".join(f"{k}={v}" for k, v in c.items() if k != "trained_betas") or ("trained_betas" if c else "default")
        ),
    )
    def test_full_1000_step_loop_matches_diffusers(self, config):
        trajectory, gen_a, gen_b = run_both(config)
        assert len(trajectory) == 1000
        for a, b in trajectory:
            torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=0, atol=1e-6)
            torch.testing.assert_close(a.pred_original_sample, b.pred_original_sample, rtol=0, atol=1e-6)
        assert torch.isfinite(trajectory[-1][0].prev_sample).all()
        # the same number of draws, in the same order: the generators end in the same state
        assert torch.equal(gen_a.get_state(), gen_b.get_state())

    @pytest.mark.parametrize("config", SHARED_OPTIONS, ids=config_id)
    def test_every_step_is_bit_identical_to_diffusers(self, config):
        """Not merely close: the same float32 operations in the same order give the same bits (100 strided steps)."""
        trajectory, gen_a, gen_b = run_both(config, n=100)
        for a, b in trajectory:
            assert torch.equal(a.prev_sample, b.prev_sample)
            assert torch.equal(a.pred_original_sample, b.pred_original_sample)
        assert torch.equal(gen_a.get_state(), gen_b.get_state())

    @pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
    @pytest.mark.parametrize("n", [1, 7, 50, 999])
    def test_fewer_inference_steps_match_diffusers(self, spacing, n):
        trajectory, gen_a, gen_b = run_both(
            {"timestep_spacing": spacing, "steps_offset": 1 if spacing == "leading" and n == 7 else 0}, n=n
        )
        assert len(trajectory) == n
        for a, b in trajectory:
            torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=0, atol=1e-6)
        assert torch.equal(gen_a.get_state(), gen_b.get_state())

    def test_custom_descending_timesteps_match_diffusers(self):
        trajectory, gen_a, gen_b = run_both({}, timesteps=[999, 800, 512, 300, 101, 37, 3, 0])
        for a, b in trajectory:
            torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=0, atol=1e-6)
        assert torch.equal(gen_a.get_state(), gen_b.get_state())

    def test_a_list_of_generators_draws_per_image_as_diffusers_does(self):
        trajectory, gen_a, gen_b = run_both({}, n=20, generators=SHAPE[0])
        for a, b in trajectory:
            torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=0, atol=1e-6)
        for g_a, g_b in zip(gen_a, gen_b, strict=True):
            assert torch.equal(g_a.get_state(), g_b.get_state())

    def test_add_noise_and_velocity_match_diffusers(self):
        ours, theirs = DDPMScheduler(), diffusers.DDPMScheduler()
        x_0, noise = torch.randn(SHAPE), torch.randn(SHAPE)
        t = torch.tensor([0, 999])
        assert torch.equal(ours.add_noise(x_0, noise, t), theirs.add_noise(x_0, noise, t))
        assert torch.equal(ours.get_velocity(x_0, noise, t), theirs.get_velocity(x_0, noise, t))

    def test_fixed_large_log_samples_where_diffusers_returns_nan(self):
        """diffusers takes the square root of log β_t (issue #14569 there); σ_t² = exp(log β_t) = β_t here."""
        theirs, _, _ = run_both({"variance_type": "fixed_large_log", "clip_sample": False}, n=5)
        assert torch.isnan(theirs[0][1].prev_sample).all()
        ours_log = DDPMScheduler(variance_type="fixed_large_log", clip_sample=False)
        ours_plain = DDPMScheduler(variance_type="fixed_large", clip_sample=False)
        x = torch.randn(SHAPE)
        for scheduler in (ours_log, ours_plain):
            scheduler.set_timesteps(5)
        a = ours_log.step(fake_model(x, 999), 800, x, generator=torch.Generator().manual_seed(3)).prev_sample
        b = ours_plain.step(fake_model(x, 999), 800, x, generator=torch.Generator().manual_seed(3)).prev_sample
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def scheduler64(**config) -> DDPMScheduler:
    return DDPMScheduler(clip_sample=False, **config)


class TestPaperEquations:
    def test_posterior_is_bayes_rule_of_the_forward_process(self):
        """q(x_{t−1}|x_t, x_0) ∝ q(x_t|x_{t−1}) q(x_{t−1}|x_0): precisions add, means are weighted by them (eq. 6-7)."""
        scheduler = scheduler64()
        betas = scheduler.betas.double()
        alphas_cumprod = torch.cumprod(1 - betas, 0)
        x_0, x_t = torch.randn(SHAPE, dtype=torch.float64), torch.randn(SHAPE, dtype=torch.float64)
        for t in (1, 10, 500, 999):
            precision = 1 / (1 - alphas_cumprod[t - 1]) + (1 - betas[t]) / betas[t]
            variance = 1 / precision
            mean = variance * (
                alphas_cumprod[t - 1].sqrt() * x_0 / (1 - alphas_cumprod[t - 1])
                + (1 - betas[t]).sqrt() * x_t / betas[t]
            )
            got_mean, got_variance, got_log_variance = scheduler.q_posterior(x_0, x_t, torch.full((2,), t))
            torch.testing.assert_close(got_mean, mean, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(got_variance.flatten(), variance.expand(2), rtol=1e-9, atol=0)
            torch.testing.assert_close(got_log_variance.flatten(), variance.log().expand(2), rtol=1e-9, atol=0)

    @pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
    def test_every_parameterization_gives_the_posterior_mean_when_it_predicts_its_target(self, prediction_type):
        """Table 2: ε-, x_0-, v- and μ̃-prediction all define μ_θ = μ̃_t(x_t, x_0) when exact."""
        scheduler = scheduler64(prediction_type=prediction_type)
        x_0, noise = torch.randn(SHAPE, dtype=torch.float64).clamp(-1, 1), torch.randn(SHAPE, dtype=torch.float64)
        t = torch.tensor([3, 600])
        x_t = scheduler.add_noise(x_0, noise, t)
        target = scheduler.training_target(x_0, noise, t)
        model = scheduler.p_mean_variance(target, x_t, t)
        posterior_mean, _, _ = scheduler.q_posterior(x_0, x_t, t)
        torch.testing.assert_close(model.mean, posterior_mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(model.pred_original_sample, x_0, rtol=1e-5, atol=1e-5)

    @pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction", "mean"])
    def test_step_mean_is_equation_11_plus_sigma_z(self, prediction_type):
        """x_{t−1} = (x_t − β_t/√(1−ᾱ_t) ε) / √α_t + σ_t z, σ_t² = β̃_t (Algorithm 2), for every parameterization."""
        scheduler = scheduler64(prediction_type=prediction_type)
        x_0, eps = torch.rand(SHAPE) * 2 - 1, torch.randn(SHAPE)
        t = 400
        x_t = scheduler.add_noise(x_0, eps, torch.tensor([t]))
        target = scheduler.training_target(x_0, eps, torch.tensor([t])).float()
        z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
        beta, alpha_bar = scheduler.betas[t].double(), scheduler.alphas_cumprod[t].double()
        posterior_variance = beta * (1 - scheduler.alphas_cumprod[t - 1].double()) / (1 - alpha_bar)
        expected = (x_t - beta / (1 - alpha_bar).sqrt() * eps) / (1 - beta).sqrt() + posterior_variance.sqrt() * z
        got = scheduler.step(target, t, x_t, generator=torch.Generator().manual_seed(5)).prev_sample
        torch.testing.assert_close(got, expected.float(), rtol=0, atol=2e-5)

    def test_kl_terms_vanish_for_the_true_posterior(self):
        """An exact ε-model with σ_t² = β̃_t matches q(x_{t−1}|x_t, x_0) exactly: every L_{t−1} is 0."""
        scheduler = scheduler64()
        x_0, eps = torch.rand(SHAPE, dtype=torch.float64) * 2 - 1, torch.randn(SHAPE, dtype=torch.float64)
        t = torch.tensor([1, 999])
        x_t = scheduler.add_noise(x_0, eps, t)
        torch.testing.assert_close(
            scheduler.vlb_terms(eps, x_0, x_t, t), torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0
        )

    def test_kl_term_with_sigma_squared_beta_has_its_closed_form(self):
        """With σ_t² = β_t and the exact mean, L_{t−1} = ½ (log(β_t/β̃_t) + β̃_t/β_t − 1) / log 2 per dimension."""
        scheduler = scheduler64(variance_type="fixed_large")
        x_0, eps = torch.rand(SHAPE, dtype=torch.float64) * 2 - 1, torch.randn(SHAPE, dtype=torch.float64)
        t = 250
        x_t = scheduler.add_noise(x_0, eps, torch.tensor([t]))
        beta = scheduler.betas.double()[t]
        alphas_cumprod = torch.cumprod(1 - scheduler.betas.double(), 0)
        beta_tilde = beta * (1 - alphas_cumprod[t - 1]) / (1 - alphas_cumprod[t])
        expected = 0.5 * (torch.log(beta / beta_tilde) + beta_tilde / beta - 1) / math.log(2)
        got = scheduler.vlb_terms(eps, x_0, x_t, torch.full((2,), t))
        torch.testing.assert_close(got, expected.expand(2), rtol=1e-7, atol=0)

    def test_decoder_term_is_the_discretized_gaussian_of_equation_13(self):
        """At t = 0, L_0 = −log ∫ N(x; μ, σ_1²) over the pixel's bin, with open end bins at ±1."""
        scheduler = scheduler64()
        levels = torch.tensor([-1.0, -1.0 + 2 / 255, 0.0 - 1 / 255, 1.0], dtype=torch.float64)
        x_0 = levels.reshape(1, 1, 2, 2)
        eps = torch.zeros_like(x_0)
        x_t = scheduler.add_noise(x_0, eps, torch.tensor([0]))  # with ε = 0 the mean is exactly μ̃(x_1, x_0) = x_0
        # σ_1² of the decoder: β̃ of the next step (β̃_1 = 0), as in the paper's code
        beta, alphas_cumprod = scheduler.betas.double(), torch.cumprod(1 - scheduler.betas.double(), 0)
        sigma = math.sqrt(beta[1] * (1 - alphas_cumprod[0]) / (1 - alphas_cumprod[1]))
        phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
        h = 1 / 255
        probabilities = [
            phi(h / sigma),
            phi(h / sigma) - phi(-h / sigma),
            phi(h / sigma) - phi(-h / sigma),
            1 - phi(-h / sigma),
        ]
        expected = -sum(math.log(p) for p in probabilities) / 4 / math.log(2)
        got = scheduler.vlb_terms(eps, x_0, x_t, torch.tensor([0]))
        assert got.item() == pytest.approx(expected, rel=1e-9)

    def test_prior_term_is_the_kl_to_the_standard_normal(self):
        scheduler = scheduler64()
        x_0 = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
        v = 1 - torch.cumprod(1 - scheduler.betas.double(), 0)[-1]
        expected = 0.5 * (-torch.log(v) + v - 1) / math.log(2)
        assert scheduler.prior_bpd(x_0).item() == pytest.approx(expected.item(), rel=1e-9)
        assert scheduler.prior_bpd(torch.ones(1, 3, 2, 2)).item() < 1e-4  # q(x_T|x_0) ≈ N(0, I) for T = 1000

    def test_learned_range_interpolates_between_beta_tilde_and_beta(self):
        scheduler = scheduler64(variance_type="learned_range")
        x_t, t = torch.randn(1, 3, 2, 2, dtype=torch.float64), torch.tensor([500])
        beta, alphas_cumprod = scheduler.betas.double(), torch.cumprod(1 - scheduler.betas.double(), 0)
        beta_tilde = beta[500] * (1 - alphas_cumprod[499]) / (1 - alphas_cumprod[500])
        for v, variance in ((-1.0, beta_tilde), (1.0, beta[500])):
            output = torch.cat([torch.zeros_like(x_t), torch.full_like(x_t, v)], dim=1)
            got = scheduler.p_mean_variance(output, x_t, t).log_variance
            torch.testing.assert_close(got, torch.full_like(x_t, variance.log().item()))

    def test_simple_loss_is_the_mean_squared_error_to_the_noise(self):
        """L_simple (eq. 14) per image."""
        scheduler = scheduler64()
        x_0, eps, output = torch.randn(SHAPE), torch.randn(SHAPE), torch.randn(SHAPE)
        t = torch.tensor([10, 900])
        loss = scheduler.training_loss(output, x_0, eps, t, loss_type="simple")
        torch.testing.assert_close(loss, ((output - eps) ** 2).mean(dim=(1, 2, 3)))

    def test_vlb_loss_is_the_bound_term_and_bad_loss_types_are_refused(self):
        scheduler = scheduler64()
        x_0, eps, output = torch.rand(SHAPE) * 2 - 1, torch.randn(SHAPE), torch.randn(SHAPE)
        t = torch.tensor([0, 900])
        loss = scheduler.training_loss(output, x_0, eps, t, loss_type="vlb")
        expected = scheduler.vlb_terms(output, x_0, scheduler.add_noise(x_0, eps, t), t)
        torch.testing.assert_close(loss, expected)
        assert (loss > 0).all()
        with pytest.raises(ValueError, match="loss_type"):
            scheduler.training_loss(output, x_0, eps, t, loss_type="l1")

    def test_bound_terms_are_differentiable(self):
        scheduler = scheduler64(variance_type="learned_range")
        output = torch.randn(2, 6, 4, 4, requires_grad=True)
        loss = scheduler.training_loss(
            output, torch.rand(SHAPE) * 2 - 1, torch.randn(SHAPE), torch.tensor([0, 5]), "vlb"
        )
        loss.sum().backward()
        assert torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0


class TestRespacing:
    def test_respaced_timesteps_keep_both_ends_evenly_spaced(self):
        assert respaced_timesteps(1000, 10) == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
        assert respaced_timesteps(1000, 1000) == list(range(999, -1, -1))
        assert respaced_timesteps(1000, 1) == [999]

    def test_respaced_betas_reproduce_alpha_bar_at_the_kept_steps(self):
        scheduler = DDPMScheduler()
        scheduler.set_timesteps(25, respace=True)
        kept = scheduler.timesteps.flip(0)
        assert scheduler.timesteps[0] == 999 and scheduler.timesteps[-1] == 0 and scheduler.respaced
        torch.testing.assert_close(
            torch.cumprod(1 - scheduler.respaced_betas.double(), 0).float(),
            scheduler.alphas_cumprod[kept],
            rtol=1e-5,
            atol=0,
        )

    def test_respaced_sampling_is_a_chain_of_n_steps_with_the_recomputed_betas(self):
        """Sampling 20 respaced steps equals diffusers' DDPM of T' = 20 steps trained with betas β', calling the
        model at the original timesteps (Nichol & Dhariwal 2021, §4)."""
        n = 20
        ours = DDPMScheduler()
        ours.set_timesteps(n, respace=True)
        reference = diffusers.DDPMScheduler(num_train_timesteps=n, trained_betas=ours.respaced_betas.tolist())
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
        y = x.clone()
        gen_a, gen_b = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
        for i, t in enumerate(ours.timesteps):
            out = fake_model(x, t)
            x = ours.step(out, t, x, generator=gen_a).prev_sample
            y = reference.step(out, n - 1 - i, y, generator=gen_b).prev_sample
            torch.testing.assert_close(x, y, rtol=0, atol=5e-6)


class TestStepTables:
    """The per-step scalars the CUDA-graph sampler reads from tables (`ddpm_hf.cuda_graphs`)."""

    def test_noise_scales_are_the_sigma_of_eq_7_on_the_respaced_chain_and_zero_at_the_last_step(self):
        scheduler = DDPMScheduler(num_train_timesteps=100)
        scheduler.set_timesteps(10, respace=True)
        kept = scheduler.timesteps.tolist()
        alphas_cumprod = scheduler.alphas_cumprod.double()
        expected = []
        for t, s in zip(kept, kept[1:], strict=False):  # σ² = β̃ = (1 − ᾱ_s)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_s)
            beta = 1 - alphas_cumprod[t] / alphas_cumprod[s]
            expected.append(((1 - alphas_cumprod[s]) / (1 - alphas_cumprod[t]) * beta).sqrt())
        expected.append(torch.zeros((), dtype=torch.float64))
        torch.testing.assert_close(scheduler.noise_scales().double(), torch.stack(expected), rtol=1e-5, atol=0)

    def test_the_likelihoods_tables_are_eq_4_and_7_in_float64_with_the_decoders_variance_at_t_0(self):
        """`DDPMScheduler.chain`: the steps t → t − 1 of the T-step chain. β̃_0 = 0, so the decoder step t = 0 takes
        σ_1² = β̃_1 for "fixed_small" and "fixed_large" alike (the paper's code); β keeps β_0 there."""
        scheduler = DDPMScheduler()
        beta = scheduler.betas.double()
        alphas_cumprod = torch.cumprod(1 - beta, 0)
        previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        beta_tilde = beta * (1 - previous) / (1 - alphas_cumprod)
        expected = {
            "sqrt_alpha_prod": alphas_cumprod.sqrt(),
            "sqrt_beta_prod": (1 - alphas_cumprod).sqrt(),
            "pred_original_sample_coeff": previous.sqrt() * beta / (1 - alphas_cumprod),
            "current_sample_coeff": (1 - beta).sqrt() * (1 - previous) / (1 - alphas_cumprod),
            "beta": beta,
            "posterior_variance": torch.cat([beta_tilde[1:2], beta_tilde[1:]]),
            "large_variance": torch.cat([beta_tilde[1:2], beta[1:]]),
        }
        for name, value in expected.items():
            assert getattr(scheduler.chain, name).dtype == torch.float64, name
            torch.testing.assert_close(getattr(scheduler.chain, name), value, rtol=1e-9, atol=0, msg=name)

    @pytest.mark.parametrize("variance_type", ["learned", "learned_range"])
    def test_a_learned_variance_has_no_noise_scales_before_the_network_runs(self, variance_type):
        scheduler = DDPMScheduler(num_train_timesteps=10, variance_type=variance_type)
        scheduler.set_timesteps(10)
        with pytest.raises(ValueError, match=f"variance_type='{variance_type}' has no σ_t"):
            scheduler.noise_scales()


class TestBadConfiguration:
    @pytest.mark.parametrize(
        "config, field",
        [
            ({"num_train_timesteps": 0}, "num_train_timesteps"),
            ({"num_train_timesteps": 2.5}, "num_train_timesteps"),
            ({"beta_start": 0.02, "beta_end": 0.02}, "beta_start"),
            ({"beta_start": 0.03, "beta_end": 0.02}, "beta_start"),
            ({"beta_start": 0.0}, "beta_start"),
            ({"beta_end": 1.5}, "beta_end"),
            ({"beta_schedule": "quadratic"}, "beta_schedule"),
            ({"variance_type": "tiny"}, "variance_type"),
            ({"prediction_type": "noise"}, "prediction_type"),
            ({"timestep_spacing": "uniform"}, "timestep_spacing"),
            ({"trained_betas": [0.1, 0.2]}, "trained_betas"),
            ({"num_train_timesteps": 2, "trained_betas": [0.1, 1.2]}, "trained_betas"),
            ({"clip_sample_range": 0.0}, "clip_sample_range"),
            ({"dynamic_thresholding_ratio": 1.5}, "dynamic_thresholding_ratio"),
            ({"steps_offset": -1}, "steps_offset"),
            # what a hand-edited scheduler_config.json may hold: diffusers fails deep in torch, or samples past T
            ({"num_train_timesteps": -5}, "num_train_timesteps"),
            ({"num_train_timesteps": "10"}, "num_train_timesteps"),
            ({"num_train_timesteps": 10.0}, "num_train_timesteps"),
            ({"num_train_timesteps": True}, "num_train_timesteps"),
            ({"num_train_timesteps": 10, "steps_offset": 10}, "steps_offset"),
            ({"steps_offset": 1.0}, "steps_offset"),
            ({"beta_schedule": 3}, "beta_schedule"),
            ({"beta_start": "0.0001"}, "beta_start"),
            ({"beta_end": float("nan")}, "beta_end"),
            ({"clip_sample": "yes"}, "clip_sample"),
            ({"trained_betas": ["a", "b"], "num_train_timesteps": 2}, "trained_betas"),
        ],
    )
    def test_construction_fails_naming_the_field(self, config, field):
        """Every bad value is a one-line ValueError naming its field, raised before any table is built."""
        with pytest.raises(ValueError, match=field) as refused:
            DDPMScheduler(**config)
        assert "\n" not in str(refused.value)

    def test_every_config_diffusers_writes_is_accepted(self, tmp_path):
        """The checks refuse nothing diffusers produces: its defaults, every schedule, and a steps_offset below T."""
        for schedule in ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"):
            diffusers.DDPMScheduler(beta_schedule=schedule, steps_offset=1).save_pretrained(tmp_path / schedule)
            assert DDPMScheduler.from_pretrained(tmp_path / schedule).config.beta_schedule == schedule

    @pytest.mark.parametrize(
        "kwargs, field",
        [
            ({"num_inference_steps": 0}, "num_inference_steps"),
            ({"num_inference_steps": 1001}, "num_inference_steps"),
            ({"num_inference_steps": 10, "timesteps": [5, 1]}, "timesteps"),
            ({}, "num_inference_steps"),
            ({"timesteps": [500, 500, 3]}, "strictly descending"),
            ({"timesteps": [3, 500]}, "strictly descending"),
            ({"timesteps": [1000, 3]}, "timesteps"),
            ({"timesteps": [5, -1]}, "timesteps"),
            ({"timesteps": []}, "timesteps"),
        ],
    )
    def test_set_timesteps_fails_naming_the_argument(self, kwargs, field):
        with pytest.raises(ValueError, match=field):
            DDPMScheduler().set_timesteps(**kwargs)

    def test_stepping_at_a_timestep_outside_the_set_chain_fails(self):
        scheduler = DDPMScheduler()
        scheduler.set_timesteps(10)
        with pytest.raises(ValueError, match="timestep 5"):
            scheduler.step(torch.zeros(SHAPE), 5, torch.zeros(SHAPE))

    def test_learned_variance_needs_twice_the_channels(self):
        with pytest.raises(ValueError, match="2×3 channels"):
            DDPMScheduler(variance_type="learned_range").step(torch.zeros(SHAPE), 10, torch.zeros(SHAPE))

    def test_bound_timesteps_out_of_range_fail(self):
        with pytest.raises(ValueError, match="timesteps must lie"):
            DDPMScheduler().q_posterior(torch.zeros(SHAPE), torch.zeros(SHAPE), torch.tensor([0, 1000]))
