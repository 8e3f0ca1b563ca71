"""Contract tests of `DDPMPipeline` with every diffusers scheduler it names (ddpm_hf.samplers, issue 13): the images
equal a plain reference loop written here from the diffusers scheduler API, DDIM's equal diffusers' own pipelines,
a pipeline saved with DDIM loads back as DDIM in ddpm_hf and in plain diffusers, and what is DDPM's own is refused
with other schedulers. A tiny UNet (ddpm-tiny, T = 20) and a few steps keep them fast."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import diffusers
import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

import ddpm_hf
from ddpm_hf.samplers import (
    SCHEDULER_NAMES,
    network_evaluations,
    sampler_record,
    scheduler_from_name,
    training_scheduler,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = 20  # training steps of the test scheduler
STEPS = 4  # inference steps
SIZE = 16  # ddpm-tiny's sample size
# name → whether its step takes a generator (written out here, independently of ddpm_hf.samplers.step_arguments)
DRAWS_NOISE = {
    "ddpm": True,
    "ddim": True,
    "dpm-solver++": True,
    "unipc": False,
    "euler": True,
    "euler-ancestral": True,
    "heun": False,
    "pndm": False,
}


def seeded(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def ddpm_config() -> dict:
    return dict(ddpm_hf.DDPMScheduler(num_train_timesteps=T).config)


@pytest.fixture
def unet(tiny_unet):
    return tiny_unet.eval()  # eval on both sides of a comparison: CPU attention differs by ~1e-6 between the modes


def pipeline_with(unet, name: str) -> ddpm_hf.DDPMPipeline:
    pipeline = ddpm_hf.DDPMPipeline(unet, scheduler_from_name(name, ddpm_config()))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@torch.no_grad()
def reference_loop(unet, scheduler, noise_generator, batch_size: int, steps: int, **step_kwargs) -> np.ndarray:
    """Sampling as the diffusers scheduler API says, NHWC in [0, 1]."""
    scheduler.set_timesteps(steps)
    image = randn_tensor((batch_size, 3, SIZE, SIZE), generator=noise_generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        output = unet(scheduler.scale_model_input(image, t), t).sample
        image = scheduler.step(output, t, image, **step_kwargs).prev_sample
    return (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_each_scheduler_samples_as_the_diffusers_scheduler_api_says(unet, name):
    pipeline = pipeline_with(unet, name)
    ours = pipeline(2, generator=seeded(0)[0], num_inference_steps=STEPS, output_type="np").images
    # the reference runs diffusers' own class (diffusers.DDPMScheduler for "ddpm")
    reference_scheduler = getattr(diffusers, type(pipeline.scheduler).__name__).from_config(pipeline.scheduler.config)
    kwargs = {"generator": seeded(0)[0]} if DRAWS_NOISE[name] else {}
    generator = kwargs.get("generator", seeded(0)[0])
    expected = reference_loop(unet, reference_scheduler, generator, 2, STEPS, **kwargs)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)
    assert pipeline.scheduler.config == reference_scheduler.config or name == "ddpm"


def test_dpm_solver_plus_plus_is_the_dpmsolverplusplus_algorithm():
    scheduler = scheduler_from_name("dpm-solver++", ddpm_config())
    assert type(scheduler) is diffusers.DPMSolverMultistepScheduler
    assert scheduler.config.algorithm_type == "dpmsolver++"


def test_ddim_equals_diffusers_ddpm_pipeline_with_ddim(unet):
    """`pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)`, the diffusers way, on both pipelines."""
    ours = ddpm_hf.DDPMPipeline(unet, ddpm_hf.DDPMScheduler(num_train_timesteps=T))
    theirs = diffusers.DDPMPipeline(unet, diffusers.DDPMScheduler(num_train_timesteps=T))
    for pipeline in (ours, theirs):
        pipeline.scheduler = diffusers.DDIMScheduler.from_config(pipeline.scheduler.config)
        pipeline.set_progress_bar_config(disable=True)
    assert type(ours.scheduler) is diffusers.DDIMScheduler
    a = ours(2, generator=seeded(3, 4), num_inference_steps=STEPS, output_type="np").images
    b = theirs(2, generator=seeded(3, 4), num_inference_steps=STEPS, output_type="np").images
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_ddim_with_eta_equals_diffusers_ddim_pipeline(unet):
    pipeline = pipeline_with(unet, "ddim")
    ours = pipeline(2, generator=seeded(5, 6), num_inference_steps=STEPS, eta=0.7, output_type="np").images
    ddim = diffusers.DDIMPipeline(unet, diffusers.DDIMScheduler.from_config(pipeline.scheduler.config))
    ddim.set_progress_bar_config(disable=True)
    theirs = ddim(2, generator=seeded(5, 6), num_inference_steps=STEPS, eta=0.7, output_type="np").images
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    deterministic = pipeline(2, generator=seeded(5, 6), num_inference_steps=STEPS, output_type="np").images
    assert np.abs(deterministic - ours).max() > 1e-3  # η changes the images


@pytest.mark.parametrize(("name", "eta"), [("ddpm", None), ("ddim", 1.0), ("euler-ancestral", None)])
def test_per_image_generators_make_each_image_independent_of_its_batch(unet, name, eta):
    """The ancestral schedulers draw their step noise with one generator per image (diffusers' randn_tensor)."""
    pipeline = pipeline_with(unet, name)
    batch = pipeline(2, generator=seeded(7, 8), num_inference_steps=STEPS, eta=eta, output_type="np").images
    alone = pipeline(1, generator=seeded(8), num_inference_steps=STEPS, eta=eta, output_type="np").images
    np.testing.assert_allclose(batch[1:], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["heun", "pndm", "dpm-solver++"])
def test_the_network_runs_once_per_timestep_entry_and_the_callback_sees_each(unet, name):
    """NFE: Heun (order 2) evaluates the network twice per inner step, PNDM adds its Runge-Kutta warm-up."""
    pipeline = pipeline_with(unet, name)
    calls, seen = [], []
    hook = unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        pipeline(1, num_inference_steps=STEPS, callback_on_step_end=lambda p, i, t, x: seen.append(t) or x)
    finally:
        hook.remove()
    assert len(calls) == len(seen) == network_evaluations(pipeline.scheduler, STEPS)
    record = sampler_record(pipeline.scheduler, STEPS)
    assert record["nfe"] == len(calls) and record["scheduler"] == type(pipeline.scheduler).__name__
    if name == "heun":
        assert record["nfe"] == 2 * STEPS - 1  # the last step, to σ = 0, is a first-order one
    if name == "dpm-solver++":
        assert record["nfe"] == STEPS


def test_each_call_resets_a_multistep_schedulers_history(unet):
    pipeline = pipeline_with(unet, "unipc")
    first = pipeline(1, generator=seeded(1), num_inference_steps=STEPS, output_type="np").images
    pipeline(1, generator=seeded(2), num_inference_steps=STEPS + 1)
    np.testing.assert_array_equal(pipeline(1, generator=seeded(1), num_inference_steps=STEPS, output_type="np").images,
                                  first)  # fmt: skip


def test_output_types_work_with_another_scheduler(unet):
    pipeline = pipeline_with(unet, "euler")
    assert pipeline(1, num_inference_steps=2, output_type="pt").images.shape == (1, 3, SIZE, SIZE)
    assert pipeline(1, num_inference_steps=2).images[0].size == (SIZE, SIZE)


# ---- Constructor, assignment, saving and loading -----------------------------------------------------------------


def test_the_constructor_and_assignment_keep_any_diffusers_scheduler(unet):
    euler = diffusers.EulerDiscreteScheduler.from_config(ddpm_config())
    pipeline = ddpm_hf.DDPMPipeline(unet, euler)
    assert pipeline.scheduler is euler
    pipeline.scheduler = ddim = diffusers.DDIMScheduler.from_config(ddpm_config())
    assert pipeline.scheduler is ddim and pipeline.config.scheduler == ("diffusers", "DDIMScheduler")
    pipeline.scheduler = diffusers.DDPMScheduler(num_train_timesteps=T)  # diffusers' DDPM: our superset
    assert type(pipeline.scheduler) is ddpm_hf.DDPMScheduler


def test_a_pipeline_saved_with_ddim_loads_as_ddim_in_ddpm_hf_and_in_plain_diffusers(unet, tmp_path):
    pipeline = pipeline_with(unet, "ddim")
    pipeline.save_pretrained(tmp_path / "ddim")
    index = json.loads((tmp_path / "ddim" / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    expected = pipeline(2, generator=seeded(1, 2), num_inference_steps=STEPS, output_type="np").images
    for cls in (ddpm_hf.DDPMPipeline, diffusers.DDPMPipeline):
        loaded = cls.from_pretrained(tmp_path / "ddim")
        loaded.unet.eval()
        loaded.set_progress_bar_config(disable=True)
        assert type(loaded.scheduler) is diffusers.DDIMScheduler
        images = loaded(2, generator=seeded(1, 2), num_inference_steps=STEPS, output_type="np").images
        np.testing.assert_allclose(images, expected, rtol=0, atol=1e-6)


def test_a_folder_diffusers_saved_with_ddim_loads_as_ddim_and_a_scheduler_argument_wins(unet, tmp_path):
    ddim = diffusers.DDIMScheduler.from_config(ddpm_config())
    diffusers.DDPMPipeline(unet, ddim).save_pretrained(tmp_path / "theirs")
    assert type(ddpm_hf.DDPMPipeline.from_pretrained(tmp_path / "theirs").scheduler) is diffusers.DDIMScheduler
    heun = diffusers.HeunDiscreteScheduler.from_config(ddpm_config())
    assert ddpm_hf.DDPMPipeline.from_pretrained(tmp_path / "theirs", scheduler=heun).scheduler is heun


# ---- What is DDPM's own ------------------------------------------------------------------------------------------


def test_ddpm_only_options_and_figures_are_refused_with_another_scheduler(unet):
    pipeline = pipeline_with(unet, "ddim")
    image = torch.zeros(1, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match=r"respace=True .* the scheduler is the DDIMScheduler"):
        pipeline(1, num_inference_steps=STEPS, respace=True)
    with pytest.raises(ValueError, match=r"shared_latent_samples \(Fig. 7\) runs DDPM's .* DDIMScheduler"):
        pipeline.shared_latent_samples(image, 5)
    with pytest.raises(ValueError, match=r"interpolate \(Fig. 8\) .*DDPMScheduler.from_config"):
        pipeline.interpolate(image, image, 5)
    with pytest.raises(ValueError, match="eta .* the EulerDiscreteScheduler takes none"):
        pipeline_with(unet, "euler")(1, num_inference_steps=STEPS, eta=0.5)
    with pytest.raises(ValueError, match=r"Fig. 6.* the PNDMScheduler does not return"):
        pipeline_with(unet, "pndm").progressive_generation(1, num_inference_steps=STEPS)


def test_progressive_generation_uses_the_schedulers_x0_prediction(unet):
    pipeline = pipeline_with(unet, "ddim")
    out = pipeline.progressive_generation(1, generator=seeded(1), num_inference_steps=STEPS, num_snapshots=2,
                                          output_type="np")  # fmt: skip
    images = pipeline(1, generator=seeded(1), num_inference_steps=STEPS, output_type="np").images
    np.testing.assert_array_equal(out.images, images)
    np.testing.assert_allclose(out.pred_original_samples[-1], images, rtol=0, atol=1e-6)  # the last x̂_0 is x_0


def test_the_bound_uses_the_training_scheduler_of_a_samplers_configuration():
    ddpm = ddpm_hf.DDPMScheduler(num_train_timesteps=T, variance_type="fixed_large")
    restored = training_scheduler(scheduler_from_name("dpm-solver++", ddpm.config))
    assert type(restored) is ddpm_hf.DDPMScheduler and restored.config.variance_type == "fixed_large"


def test_unknown_names_list_the_known_ones_and_class_names_work():
    with pytest.raises(ValueError, match=r"unknown scheduler 'fast': use ddpm, ddim, dpm-solver\+\+, .*, pndm, or a"):
        scheduler_from_name("fast", ddpm_config())
    assert type(scheduler_from_name("DDPMScheduler", ddpm_config())) is ddpm_hf.DDPMScheduler
    assert type(scheduler_from_name("KDPM2DiscreteScheduler", ddpm_config())) is diffusers.KDPM2DiscreteScheduler
    with pytest.raises(ValueError, match="unknown scheduler 'DDPMPipeline'"):
        scheduler_from_name("DDPMPipeline", ddpm_config())


# ---- Speed-ups ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dpm-solver++", "unipc", "euler", "euler-ancestral", "heun", "pndm"])
def test_cuda_graphs_forced_on_the_cpu_leave_schedulers_other_than_ddpm_and_ddim_to_the_step_loop(unet, name):
    """Only DDPM's and DDIM's steps are fixed functions of t (`ddpm_hf.cuda_graphs`); the others keep state between
    steps or rescale x_t, and sample through the step loop, with the same images."""
    pipeline = pipeline_with(unet, name)
    expected = pipeline(2, generator=seeded(1, 2), num_inference_steps=STEPS, output_type="np").images
    pipeline.enable_speedups(ddpm_hf.Speedups(cuda_graphs=True))
    images = pipeline(2, generator=seeded(1, 2), num_inference_steps=STEPS, output_type="np").images
    np.testing.assert_array_equal(images, expected)
    assert not pipeline._acceleration.graphs


@pytest.mark.parametrize("name", ["heun", "dpm-solver++"])
def test_channels_last_and_bf16_work_with_other_schedulers(unet, name):
    pipeline = pipeline_with(unet, name)
    expected = pipeline(2, generator=seeded(1, 2), num_inference_steps=STEPS, output_type="np").images
    pipeline.enable_speedups(ddpm_hf.Speedups(channels_last=True))
    images = pipeline(2, generator=seeded(1, 2), num_inference_steps=STEPS, output_type="np").images
    np.testing.assert_allclose(images, expected, rtol=0, atol=1e-5)
    pipeline.enable_speedups(ddpm_hf.Speedups(bf16=True))
    images = pipeline(2, generator=seeded(1, 2), num_inference_steps=STEPS, output_type="np").images
    assert np.abs(images - expected).max() < 0.05


def test_compile_works_with_another_scheduler(unet):
    """The compiled UNet sees Euler's scaled input x_t / √(σ² + 1) and gives the plain images up to rounding."""
    pipeline = pipeline_with(unet, "euler")
    expected = pipeline(2, generator=seeded(1, 2), num_inference_steps=3, output_type="np").images
    pipeline.enable_speedups(ddpm_hf.Speedups(compile=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback: compile itself ran
        images = pipeline(2, generator=seeded(1, 2), num_inference_steps=3, output_type="np").images
    np.testing.assert_allclose(images, expected, rtol=0, atol=1e-5)
    assert pipeline.active_speedups().compile


def test_importing_the_pipeline_does_not_import_the_hub_or_model_card_code():
    code = "import sys, ddpm_hf.pipeline; print(sorted(m for m in sys.modules if m.startswith('ddpm_hf')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ddpm_hf.pipeline" in loaded
    assert "ddpm_hf.hub" not in loaded and "ddpm_hf.model_card" not in loaded
