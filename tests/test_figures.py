"""Specification of `ddpm-hf figures`: the paper's figures as PNG files of the right layout."""

from __future__ import annotations

import datasets
import diffusers
import PIL.Image
import torch

from ddpm_hf import DDPMPipeline, DDPMScheduler
from ddpm_hf.cli import main as cli
from ddpm_hf.figures import write_figures
from ddpm_hf.samplers import scheduler_from_name


def test_the_four_figures_have_the_papers_layouts(tiny_unet, tmp_path):
    pipeline = DDPMPipeline(tiny_unet, DDPMScheduler(num_train_timesteps=12))
    pipeline.set_progress_bar_config(disable=True)
    paths = write_figures(pipeline, tmp_path, num_samples=4)
    sizes = {name: PIL.Image.open(path).size for name, path in paths.items()}
    assert sizes["samples"] == (32, 32)  # 2 × 2 images of 16 px
    assert sizes["progressive_generation"] == (10 * 16, 4 * 16)  # 10 snapshots of x̂_0 per image (Fig. 6)
    assert sizes["shared_latents"] == (4 * 16, 4 * 16)  # x_t and 3 samples, for 4 values of t (Fig. 7)
    assert sizes["interpolation"] == (13 * 16, 16)  # x_0, 11 values of λ, x'_0 (Fig. 8)


def test_the_command_draws_figures_from_dataset_images(tiny_unet, tmp_path, capsys):
    DDPMPipeline(tiny_unet, DDPMScheduler(num_train_timesteps=8)).save_pretrained(tmp_path / "pipeline")
    (tmp_path / "data").mkdir()
    images = [PIL.Image.new("RGB", (16, 16), (200, 30 * i, 10)) for i in range(3)]
    datasets.Dataset.from_dict({"img": images}).cast_column("img", datasets.Image()).to_parquet(
        tmp_path / "data" / "test-00000-of-00001.parquet"
    )
    status = cli(["figures", str(tmp_path / "pipeline"), "--output-dir", str(tmp_path / "figures"),
                  "--dataset", str(tmp_path / "data"), "--num-samples", "2"])  # fmt: skip
    assert status == 0
    interpolation = PIL.Image.open(tmp_path / "figures" / "interpolation.png").convert("RGB")
    assert interpolation.getpixel((0, 0)) == (200, 0, 10)  # the first dataset image stands at the left end
    assert "interpolation:" in capsys.readouterr().out


def test_every_progress_bar_names_its_figure(tiny_unet, tmp_path, capsys):
    """A dozen reverse chains, each its own progress bar: none is left without a label saying what it draws."""
    DDPMPipeline(tiny_unet, DDPMScheduler(num_train_timesteps=8)).save_pretrained(tmp_path / "pipeline")
    assert cli(["figures", str(tmp_path / "pipeline"), "--output-dir", str(tmp_path / "f"), "--num-samples", "2"]) == 0
    said = capsys.readouterr().err
    labels = ["Sample grid (2 images)", "Fig. 6: progressive generation (2 images)", "Fig. 8: interpolation from t = 5"]
    labels += [f"Fig. 7: shared latents from t = {t}" for t in (8, 7, 5, 3)]
    assert [label for label in labels if label not in said] == []
    bars = [part for part in said.replace("\r", "\n").splitlines() if "%|" in part]
    assert bars and all(":" in bar.split("%|")[0] for bar in bars)


def test_write_figures_leaves_the_pipelines_own_progress_bar_settings(tiny_unet, tmp_path, capsys):
    pipeline = DDPMPipeline(tiny_unet, DDPMScheduler(num_train_timesteps=4))
    pipeline.set_progress_bar_config(disable=True, desc="mine")
    write_figures(pipeline, tmp_path, num_samples=2, show_progress=False)
    assert pipeline._progress_bar_config == {"disable": True, "desc": "mine"}
    assert "%|" not in capsys.readouterr().err


def test_pickle_weights_draw_figures_only_with_allow_pickle(tiny_unet, tmp_path, capsys):
    pipeline = DDPMPipeline(tiny_unet, DDPMScheduler(num_train_timesteps=4))
    pipeline.save_pretrained(tmp_path / "pipeline")
    (tmp_path / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    tiny_unet.save_pretrained(tmp_path / "pipeline" / "unet", safe_serialization=False)
    command = ["figures", str(tmp_path / "pipeline"), "--output-dir", str(tmp_path / "f"), "--num-samples", "2"]
    assert cli(command) == 1 and "--allow-pickle" in capsys.readouterr().err
    assert cli([*command, "--allow-pickle"]) == 0 and (tmp_path / "f" / "interpolation.png").is_file()


def test_a_missing_pipeline_is_a_clear_error(tmp_path, capsys):
    assert cli(["figures", str(tmp_path / "none"), "--output-dir", str(tmp_path / "f")]) == 1
    assert "error" in capsys.readouterr().err


def test_a_dataset_of_one_image_is_refused_for_figures_7_and_8(tiny_unet, tmp_path, capsys):
    DDPMPipeline(tiny_unet, DDPMScheduler(num_train_timesteps=4)).save_pretrained(tmp_path / "pipeline")
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_dict({"img": [PIL.Image.new("RGB", (16, 16))]}).cast_column(
        "img", datasets.Image()
    ).to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    status = cli(["figures", str(tmp_path / "pipeline"), "--output-dir", str(tmp_path / "figures"),
                  "--dataset", str(tmp_path / "data"), "--num-samples", "1"])  # fmt: skip
    assert status == 1 and "at least two images" in capsys.readouterr().err


def test_another_scheduler_draws_the_grid_and_fig_6_and_ddpm_draws_figs_7_and_8(tiny_unet, tmp_path):
    """--scheduler ddim: the sample grid and Fig. 6 with DDIM; Fig. 7 and 8 run DDPM's chain (the same files as a
    DDPM pipeline writes); the pipeline keeps its DDIM scheduler after."""
    ddpm = DDPMPipeline(tiny_unet.eval(), DDPMScheduler(num_train_timesteps=10))
    ddpm.set_progress_bar_config(disable=True)
    ddim = DDPMPipeline(tiny_unet, scheduler_from_name("ddim", ddpm.scheduler.config))
    ddim.set_progress_bar_config(disable=True)
    images = torch.rand(2, 3, 16, 16) * 2 - 1  # the same Fig. 7 and 8 inputs for both
    ours = write_figures(ddim, tmp_path / "ddim", images, num_samples=2, num_inference_steps=3, eta=0.5)
    theirs = write_figures(ddpm, tmp_path / "ddpm", images, num_samples=2, num_inference_steps=3)
    assert type(ddim.scheduler) is diffusers.DDIMScheduler
    for name in ("shared_latents", "interpolation"):
        assert ours[name].read_bytes() == theirs[name].read_bytes()
    assert ours["samples"].read_bytes() != theirs["samples"].read_bytes()
