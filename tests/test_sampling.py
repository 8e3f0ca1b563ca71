"""Specification of `ddpm_hf.sampling`: the same N images whatever the batch size or number of processes."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from processes import accelerate_launch

from ddpm_hf import DDPMPipeline, DDPMScheduler
from ddpm_hf.sampling import generate_samples, load_samples, samples_to_npz


@pytest.fixture
def pipeline(tiny_unet) -> DDPMPipeline:
    pipe = DDPMPipeline(tiny_unet, DDPMScheduler(num_train_timesteps=10))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def draw(pipeline, folder, n, **kwargs) -> np.ndarray:
    generate_samples(pipeline, n, folder, seed=7, num_inference_steps=10, show_progress=False, **kwargs)
    return load_samples(folder, n)


def test_the_batch_size_does_not_change_the_images(pipeline, tmp_path):
    by_two, by_three = draw(pipeline, tmp_path / "a", 5, batch_size=2), draw(pipeline, tmp_path / "b", 5, batch_size=3)
    assert by_two.shape == (5, 16, 16, 3) and by_two.dtype == np.uint8
    assert np.array_equal(by_two, by_three)
    assert len({image.tobytes() for image in by_two}) == 5  # every image has its own seed


def test_an_interrupted_run_resumes_without_redrawing(pipeline, tmp_path):
    draw(pipeline, tmp_path / "run", 3, batch_size=2)
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
    drawn = generate_samples(pipeline, 5, tmp_path / "run", seed=7, num_inference_steps=10, show_progress=False)
    assert drawn == [3, 4]
    assert all((tmp_path / "run" / name).stat().st_mtime_ns == mtime for name, mtime in first.items())
    assert np.array_equal(load_samples(tmp_path / "run", 5), draw(pipeline, tmp_path / "fresh", 5, batch_size=5))


def test_processes_split_the_indices_between_them(pipeline, tmp_path):
    mine = generate_samples(pipeline, 5, tmp_path, seed=7, num_inference_steps=10, process_index=1,
                            num_processes=2, show_progress=False)  # fmt: skip
    assert mine == [1, 3] and sorted(p.name for p in tmp_path.iterdir()) == ["000001.png", "000003.png"]


def test_npz_packing_and_missing_samples(pipeline, tmp_path):
    draw(pipeline, tmp_path / "s", 2)
    packed = np.load(samples_to_npz(tmp_path / "s", 2, tmp_path / "s.npz"))["arr_0"]
    assert packed.shape == (2, 16, 16, 3) and packed.dtype == np.uint8
    with pytest.raises(FileNotFoundError, match="000002.png"):
        load_samples(tmp_path / "s", 3)


def test_one_and_two_processes_draw_the_same_images(pipeline, tmp_path):
    pipeline.save_pretrained(tmp_path / "pipeline")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    common = [str(tmp_path / "pipeline"), "--num-samples", "6", "--seed", "3", "--num-inference-steps", "10"]
    one = subprocess.run(["ddpm-hf", "sample", *common, "--output-dir", str(tmp_path / "one"), "--batch-size", "4"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    two_arguments = [
        *common,
        "--output-dir",
        str(tmp_path / "two"),
        "--batch-size",
        "2",
        "--npz",
        str(tmp_path / "two.npz"),
    ]
    two = subprocess.run(
        accelerate_launch(2, "ddpm_hf.sampling", *two_arguments), capture_output=True, text=True, env=env
    )
    assert two.returncode == 0, two.stderr[-2000:]
    assert "process 0/2: drew 3 images" in two.stdout and "process 1/2: drew 3 images" in two.stdout  # split
    assert np.array_equal(load_samples(tmp_path / "one", 6), load_samples(tmp_path / "two", 6))
    assert np.array_equal(np.load(tmp_path / "two.npz")["arr_0"], load_samples(tmp_path / "one", 6))


def test_the_speedup_options_sample_the_same_images_up_to_rounding(pipeline, tmp_path):
    """`--channels-last on --bf16 on` (forced on the CPU; on CUDA they are the default) draws the same images from the
    same seeds as the plain computation, up to bf16's rounding: a few levels of 255 at most."""
    pipeline.save_pretrained(tmp_path / "pipeline")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [str(tmp_path / "pipeline"), "--num-samples", "4", "--num-inference-steps", "10"]
    plain_command = ["ddpm-hf", "sample", *common, "--output-dir", str(tmp_path / "plain")]
    fast_command = ["ddpm-hf", "sample", *common, "--output-dir", str(tmp_path / "fast"), "--channels-last", "on",
                    "--bf16", "on"]  # fmt: skip
    plain = subprocess.run(plain_command, capture_output=True, text=True, env=env)
    fast = subprocess.run(fast_command, capture_output=True, text=True, env=env)
    assert plain.returncode == 0 and fast.returncode == 0, plain.stderr[-2000:] + fast.stderr[-2000:]
    difference = np.abs(load_samples(tmp_path / "fast", 4).astype(int) - load_samples(tmp_path / "plain", 4))
    assert difference.max() <= 8 and difference.mean() < 0.5


def test_a_bad_speedup_option_is_a_usage_error(tmp_path):
    command = ["ddpm-hf", "sample", str(tmp_path), "--num-samples", "2", "--output-dir", str(tmp_path / "out"),
               "--compile", "sometimes"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2 and "--compile" in result.stderr and not (tmp_path / "out").exists()


def test_a_missing_pipeline_is_a_clear_error(tmp_path):
    result = subprocess.run(["ddpm-hf", "sample", str(tmp_path / "nothing"), "--num-samples", "2",
                             "--output-dir", str(tmp_path / "out")], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1 and "error" in result.stderr and "Traceback" not in result.stderr
