"""Specification of `ddpm-hf figures`: the paper's figures as PNG files of the right layout."""

from __future__ import annotations

import datasets
import PIL.Image

from ddpm_hf import DDPMPipeline, DDPMScheduler
from ddpm_hf.cli import main as cli
from ddpm_hf.figures import write_figures


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
