"""Specification of `ddpm_hf.cuda_graphs`: the reverse process from fixed buffers and on-device tables.

On the CPU the buffered step runs without capture and must give the eager loop's images bit for bit, for DDPM
(`ddpm_hf.DDPMScheduler.step`) and DDIM (`diffusers.DDIMScheduler.step`, every η); the capture itself needs a CUDA GPU
(those tests skip without one).
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from ddpm_hf import DDPMPipeline, DDPMScheduler
from ddpm_hf.acceleration import Speedups
from ddpm_hf.cuda_graphs import GraphedReverseProcess, can_graph

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def generators(count: int, device: str = "cpu") -> list[torch.Generator]:
    return [torch.Generator(device).manual_seed(100 + i) for i in range(count)]


def eager_samples(unet, scheduler, x_T: torch.Tensor, generator, eta: float | None = None) -> torch.Tensor:
    """The loop as the plain pipeline runs it: the UNet, then the scheduler's `step` (with η for DDIM), for every t;
    x_t kept in the buffer's (contiguous) layout, as the CPU convolutions' results depend on the layout of their
    input (the step's result takes the UNet output's layout for x̂_0-prediction)."""
    step_kwargs = {} if eta is None else {"eta": eta}
    x = x_T
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t).sample, t, x, generator=generator, **step_kwargs).prev_sample.contiguous()
    return x


def buffered_samples(unet, scheduler, x_T: torch.Tensor, generator, eta: float | None = None) -> torch.Tensor:
    process = GraphedReverseProcess(
        lambda x, t: unet(x, t).sample, scheduler, tuple(x_T.shape), x_T.dtype, x_T.device, capture=False, eta=eta
    )
    return process.run(x_T, generator)


def initial_noise(batch_size: int, seed: int = 7) -> torch.Tensor:
    return torch.randn((batch_size, 3, 16, 16), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"variance_type": "fixed_large"},
        {"variance_type": "fixed_small_log"},
        {"variance_type": "fixed_large_log"},
        {"prediction_type": "sample"},
        {"prediction_type": "v_prediction", "clip_sample": False},
        {"prediction_type": "mean"},
        {"beta_schedule": "squaredcos_cap_v2"},
    ],
    ids=lambda config: ",".join(f"{k}={v}" for k, v in config.items()) or "default",
)
@torch.no_grad()
def test_buffered_steps_give_the_eager_loops_images_bit_for_bit(tiny_unet, config):
    tiny_unet.eval()
    scheduler = DDPMScheduler(num_train_timesteps=30, **config)
    scheduler.set_timesteps(30)
    x_T = initial_noise(3)
    expected = eager_samples(tiny_unet, scheduler, x_T, generators(3))
    assert torch.equal(buffered_samples(tiny_unet, scheduler, x_T, generators(3)), expected)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(
    "config",
    [
        {},
        {"prediction_type": "sample"},
        {"prediction_type": "v_prediction", "clip_sample": False},
        {"set_alpha_to_one": False, "clip_sample_range": 0.5},
        {"timestep_spacing": "trailing", "rescale_betas_zero_snr": True, "prediction_type": "v_prediction"},
        {"beta_schedule": "squaredcos_cap_v2", "steps_offset": 1},
    ],
    ids=lambda config: ",".join(f"{k}={v}" for k, v in config.items()) or "default",
)
@torch.no_grad()
def test_buffered_ddim_steps_give_diffusers_ddim_images_bit_for_bit(tiny_unet, config, eta):
    """The DDIM step of the graph is `DDIMScheduler.step`'s arithmetic: the same images for η = 0 (no draws) and η > 0
    (one draw per step, the last included), for every prediction type, clipping, final ᾱ and spacing."""
    tiny_unet.eval()
    scheduler = DDIMScheduler(num_train_timesteps=100, **config)
    scheduler.set_timesteps(10)
    x_T = initial_noise(3)
    expected = eager_samples(tiny_unet, scheduler, x_T, generators(3), eta)
    assert torch.equal(buffered_samples(tiny_unet, scheduler, x_T, generators(3), eta=eta), expected)


@torch.no_grad()
def test_ddim_without_eta_is_deterministic_ddim(tiny_unet):
    """η defaults to 0, as in `DDIMScheduler.step`: no noise is drawn, so the generator is not consumed."""
    tiny_unet.eval()
    scheduler = DDIMScheduler(num_train_timesteps=100)
    scheduler.set_timesteps(5)
    generator = torch.Generator().manual_seed(3)
    samples = buffered_samples(tiny_unet, scheduler, initial_noise(2), generator)
    assert torch.equal(samples, eager_samples(tiny_unet, scheduler, initial_noise(2), None, 0.0))
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(3).get_state())


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@torch.no_grad()
def test_buffered_steps_give_the_plain_pipelines_images(tiny_unet, prediction_type):
    """The plain pipeline (x_T drawn per image, then the UNet and `DDPMScheduler.step` for every t) and the buffered
    step give the same images bit for bit: the step's arithmetic is one implementation, fed the same network outputs.

    For ε- and v-prediction x_{t'} keeps x_t's memory layout in both loops. With x̂_0- or μ̃-prediction the eager
    x_{t'} takes the layout of the UNet's output instead, channels-last on the CPU, while the buffer stays
    contiguous; the CPU convolutions round differently on the two layouts (about 1e-6 per step, 1.0e-5 after 30
    steps with one thread and 1.3e-5 with two, measured: what once failed a 1e-5 tolerance). Those prediction types
    are compared above, with the eager loop's layout pinned to the buffer's."""
    tiny_unet.eval()
    scheduler = DDPMScheduler(num_train_timesteps=30, prediction_type=prediction_type)
    pipeline = DDPMPipeline(unet=tiny_unet, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    expected = pipeline(3, generator=generators(3), num_inference_steps=30, output_type="pt").images
    streams = generators(3)
    x_T = torch.cat([torch.randn((1, 3, 16, 16), generator=g) for g in streams])  # as the pipeline draws x_T
    samples = buffered_samples(tiny_unet, pipeline.scheduler, x_T, streams)
    assert torch.equal((samples / 2 + 0.5).clamp(0, 1), expected)


@torch.no_grad()
def test_one_process_samples_each_chain_of_its_length_strided_or_respaced(tiny_unet):
    """The tables are reloaded from the scheduler on every run: a strided and a respaced chain of the same length
    share one process and each gives its own eager images."""
    tiny_unet.eval()
    scheduler = DDPMScheduler(num_train_timesteps=100)
    x_T = initial_noise(2)
    scheduler.set_timesteps(10)
    process = GraphedReverseProcess(
        lambda x, t: tiny_unet(x, t).sample, scheduler, tuple(x_T.shape), x_T.dtype, x_T.device, capture=False
    )
    for respace in (False, True, False):
        scheduler.set_timesteps(10, respace=respace)
        expected = eager_samples(tiny_unet, scheduler, x_T, torch.Generator().manual_seed(5))
        assert torch.equal(process.run(x_T, torch.Generator().manual_seed(5)), expected)


@torch.no_grad()
def test_the_run_does_not_change_the_initial_noise_it_is_given(tiny_unet):
    tiny_unet.eval()
    scheduler = DDPMScheduler(num_train_timesteps=10)
    scheduler.set_timesteps(10)
    x_T = initial_noise(1)
    kept = x_T.clone()
    buffered_samples(tiny_unet, scheduler, x_T, generators(1))
    assert torch.equal(x_T, kept)


class TestRefusals:
    @pytest.mark.parametrize(
        "scheduler",
        [
            DDPMScheduler(num_train_timesteps=10, variance_type="learned_range"),
            DDPMScheduler(num_train_timesteps=10, variance_type="learned"),
            DDPMScheduler(num_train_timesteps=10, thresholding=True),
            DDIMScheduler(num_train_timesteps=10, thresholding=True),
            EulerDiscreteScheduler(num_train_timesteps=10),
        ],
        ids=["learned_range", "learned", "ddpm-thresholding", "ddim-thresholding", "euler"],
    )
    def test_learned_variances_thresholding_and_other_schedulers_cannot_be_graphed(self, scheduler):
        scheduler.set_timesteps(10)
        assert not can_graph(scheduler)
        with pytest.raises(ValueError, match=f"fixed variance or DDIM's.*not the {type(scheduler).__name__}"):
            GraphedReverseProcess(
                lambda x, t: x, scheduler, (1, 3, 16, 16), torch.float32, torch.device("cpu"), capture=False
            )

    def test_eta_is_refused_for_ddpm(self):
        scheduler = DDPMScheduler(num_train_timesteps=10)
        scheduler.set_timesteps(10)
        with pytest.raises(ValueError, match="eta is DDIM's noise scale; the DDPMScheduler takes none"):
            GraphedReverseProcess(
                lambda x, t: x, scheduler, (1, 3, 16, 16), torch.float32, torch.device("cpu"), capture=False, eta=0.5
            )

    def test_capture_needs_a_cuda_device(self):
        scheduler = DDPMScheduler(num_train_timesteps=10)
        scheduler.set_timesteps(10)
        with pytest.raises(ValueError, match="CUDA"):
            GraphedReverseProcess(lambda x, t: x, scheduler, (1, 3, 16, 16), torch.float32, torch.device("cpu"))

    def test_a_batch_of_another_shape_or_a_chain_of_another_length_is_refused(self, tiny_unet):
        scheduler = DDPMScheduler(num_train_timesteps=10)
        scheduler.set_timesteps(10)
        process = GraphedReverseProcess(
            lambda x, t: x, scheduler, (2, 3, 16, 16), torch.float32, torch.device("cpu"), capture=False
        )
        with pytest.raises(ValueError, match="shape"):
            process.run(initial_noise(3), None)
        scheduler.set_timesteps(5)
        with pytest.raises(ValueError, match="10 steps"):
            process.run(initial_noise(2), None)


@needs_cuda
@pytest.mark.parametrize(
    "scheduler, eta",
    [(DDPMScheduler(num_train_timesteps=50), None), (DDIMScheduler(num_train_timesteps=100), 0.0),
     (DDIMScheduler(num_train_timesteps=100), 1.0)],
    ids=["ddpm", "ddim-eta-0", "ddim-eta-1"],
)  # fmt: skip
@torch.no_grad()
def test_the_captured_graph_gives_the_eager_loops_images_on_the_gpu(tiny_unet, scheduler, eta):
    unet = tiny_unet.cuda().eval()
    scheduler.set_timesteps(20)
    x_T = initial_noise(4).cuda()
    with torch.backends.cudnn.flags(enabled=True, deterministic=True, benchmark=False, allow_tf32=False):
        expected = eager_samples(unet, scheduler, x_T, generators(4, "cuda"), eta)
        process = GraphedReverseProcess(
            lambda x, t: unet(x, t).sample, scheduler, tuple(x_T.shape), x_T.dtype, x_T.device, eta=eta
        )
        assert process.graph is not None
        actual = process.run(x_T, generators(4, "cuda"))
        again = process.run(x_T, generators(4, "cuda"))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(actual, again)


@needs_cuda
def test_the_pipeline_with_every_speedup_stays_close_to_the_plain_pipeline_on_the_gpu(tiny_unet):
    pipeline = DDPMPipeline(unet=tiny_unet, scheduler=DDPMScheduler(num_train_timesteps=100)).to("cuda")
    pipeline.set_progress_bar_config(disable=True)
    plain = pipeline(4, generator=generators(4, "cuda"), num_inference_steps=100, output_type="np").images
    pipeline.enable_speedups(Speedups(bf16=True))
    fast = pipeline(4, generator=generators(4, "cuda"), num_inference_steps=100, output_type="np").images
    assert abs(fast - plain).mean() < 0.01
