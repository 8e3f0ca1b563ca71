"""Specification of `ddpm_hf.sampling`: the same N images whatever the batch size or number of processes, and a
samples folder that only ever holds the images of one pipeline drawn with one set of settings."""

from __future__ import annotations

import argparse
import json
import os
import subprocess

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch
from bad_input import tree_digest
from processes import accelerate_launch

from ddpm_hf import DDPMPipeline, DDPMScheduler, create_unet
from ddpm_hf.acceleration import Speedups
from ddpm_hf.evaluate import build_parser as evaluate_parser
from ddpm_hf.figures import build_parser as figures_parser
from ddpm_hf.sampling import (
    MANIFEST_NAME,
    build_parser,
    draw_samples,
    generate_samples,
    load_pipeline,
    load_samples,
    main,
    samples_manifest,
    samples_to_npz,
    weights_sha256,
)


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
    assert mine == [1, 3] and sorted(p.name for p in tmp_path.iterdir()) == ["000001.png", "000003.png", MANIFEST_NAME]


def test_npz_packing_and_missing_samples(pipeline, tmp_path):
    draw(pipeline, tmp_path / "s", 2)
    packed = np.load(samples_to_npz(tmp_path / "s", 2, tmp_path / "s.npz"))["arr_0"]
    assert packed.shape == (2, 16, 16, 3) and packed.dtype == np.uint8
    with pytest.raises(FileNotFoundError, match="000002.png"):
        load_samples(tmp_path / "s", 3)


def test_the_npz_path_is_the_file_written_and_a_folder_is_refused(pipeline, tmp_path):
    """numpy adds `.npz` to a name without it: the path returned (and printed by the command) is the real one."""
    draw(pipeline, tmp_path / "s", 2)
    assert samples_to_npz(tmp_path / "s", 2, tmp_path / "packed") == tmp_path / "packed.npz"
    assert np.load(tmp_path / "packed.npz")["arr_0"].shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="is a folder: give a file name"):
        samples_to_npz(tmp_path / "s", 2, tmp_path)
    assert not (tmp_path.parent / f"{tmp_path.name}.npz").exists()


# ---- The samples folder records what drew it ------------------------------------------------------------------------


def test_the_manifest_records_what_determines_the_pixels(pipeline, tmp_path):
    draw(pipeline, tmp_path, 2)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest == samples_manifest(pipeline, seed=7, num_inference_steps=10, respace=False)
    assert manifest["unet_sha256"] == weights_sha256(pipeline.unet) and len(manifest["unet_sha256"]) == 64
    scheduler = manifest["scheduler"]
    assert scheduler["variance_type"] == "fixed_small" and scheduler["num_train_timesteps"] == 10
    assert (manifest["seed"], manifest["num_inference_steps"], manifest["respace"]) == (7, 10, False)
    assert manifest["image_shape"] == [3, 16, 16] and manifest["bf16"] is False and manifest["unet_dtype"] == "float32"


def test_the_weights_hash_ignores_the_memory_layout_but_not_a_single_weight(pipeline):
    before = weights_sha256(pipeline.unet)
    pipeline.unet.to(memory_format=torch.channels_last)  # what the channels-last speed-up does
    assert weights_sha256(pipeline.unet) == before
    with torch.no_grad():
        next(pipeline.unet.parameters())[0, 0, 0, 0] += 1e-3  # the first convolution's first weight
    assert weights_sha256(pipeline.unet) != before


def test_a_folder_drawn_by_another_pipeline_is_refused_before_anything_is_drawn(pipeline, tmp_path):
    """The bug this guards against: evaluating pipeline B where pipeline A's samples lie reported A's FID."""
    draw(pipeline, tmp_path, 2)
    before = tree_digest(tmp_path)
    torch.manual_seed(1)
    other = DDPMPipeline(create_unet("ddpm-tiny"), DDPMScheduler(num_train_timesteps=10))
    refusal = r"holds samples drawn with other settings \(unet_sha256 '[0-9a-f]{12}…' there"
    with pytest.raises(ValueError, match=refusal):
        generate_samples(other, 4, tmp_path, seed=7, num_inference_steps=10, show_progress=False)
    assert tree_digest(tmp_path) == before


def _variance(pipeline):
    pipeline.scheduler = DDPMScheduler.from_config(pipeline.scheduler.config, variance_type="fixed_large")


@pytest.mark.parametrize(
    "change, draw_options, field",
    [
        (None, {"seed": 8}, "seed 7 there, 8 now"),
        (None, {"num_inference_steps": 5}, "num_inference_steps 10 there, 5 now"),
        (None, {"respace": True}, "respace False there, True now"),
        (_variance, {}, "scheduler.variance_type 'fixed_small' there, 'fixed_large' now"),
        (lambda pipeline: pipeline.enable_speedups(Speedups(bf16=True)), {}, "bf16 False there, True now"),
        (lambda pipeline: pipeline.unet.to(torch.float64), {}, "unet_dtype 'float32' there, 'float64' now"),
    ],
    ids=["seed", "steps", "respace", "variance", "bf16", "dtype"],
)
def test_every_setting_that_changes_the_pixels_must_match_to_resume(pipeline, tmp_path, change, draw_options, field):
    draw(pipeline, tmp_path, 2)
    before = tree_digest(tmp_path)
    if change is not None:
        change(pipeline)
    options = {"seed": 7, "num_inference_steps": 10, **draw_options}
    with pytest.raises(ValueError, match=f"{tmp_path} holds samples drawn with other settings .*{field}") as refused:
        generate_samples(pipeline, 3, tmp_path, show_progress=False, **options)
    assert "another --output-dir" in str(refused.value) and f"delete {tmp_path}" in str(refused.value)
    assert tree_digest(tmp_path) == before


def test_the_settings_that_change_nothing_may_differ(pipeline, tmp_path):
    """The batch size, the number of processes and the rounding-only speed-ups do not change the images."""
    draw(pipeline, tmp_path, 2, batch_size=1)
    pipeline.enable_speedups(Speedups(channels_last=True))
    assert generate_samples(pipeline, 3, tmp_path, seed=7, num_inference_steps=10, batch_size=5,
                            show_progress=False) == [2]  # fmt: skip


def test_samples_without_a_manifest_are_refused(pipeline, tmp_path):
    """A folder of samples from an older ddpm-hf (or copied in) cannot be told apart from another model's: refused,
    never adopted."""
    draw(pipeline, tmp_path, 2)
    (tmp_path / MANIFEST_NAME).unlink()
    before = tree_digest(tmp_path)
    with pytest.raises(ValueError, match=r"holds 2 sample image\(s\) \(000000.png, …\) but no manifest.json"):
        draw(pipeline, tmp_path, 3)
    assert tree_digest(tmp_path) == before


def test_an_unreadable_manifest_is_refused_naming_it(pipeline, tmp_path):
    draw(pipeline, tmp_path, 1)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ValueError, match=f"manifest {tmp_path / MANIFEST_NAME} cannot be read"):
        draw(pipeline, tmp_path, 2)


@pytest.mark.parametrize(
    "impostor, found",
    [
        (PIL.Image.new("RGB", (8, 8)), "8×8 RGB"),
        (PIL.Image.new("L", (16, 16)), "16×16 L"),
        (PIL.Image.new("RGBA", (16, 16)), "16×16 RGBA"),
    ],
    ids=["size", "greyscale", "alpha"],
)
def test_a_sample_of_the_wrong_size_or_channels_is_refused_naming_the_file(pipeline, tmp_path, impostor, found):
    draw(pipeline, tmp_path, 3)
    impostor.save(tmp_path / "000001.png")
    before = tree_digest(tmp_path)
    message = f"Sample {tmp_path / '000001.png'} is a {found} image, but the pipeline draws 16×16 RGB images"
    with pytest.raises(ValueError, match=message):
        draw(pipeline, tmp_path, 4)
    with pytest.raises(ValueError, match=message):
        load_samples(tmp_path, 3, shape=(3, 16, 16))
    with pytest.raises(ValueError, match="000001.png"):
        load_samples(tmp_path, 3)  # the first image sets the shape the others must have
    assert tree_digest(tmp_path) == before


def test_a_truncated_sample_is_refused_naming_the_file(pipeline, tmp_path):
    draw(pipeline, tmp_path, 2)
    whole = (tmp_path / "000001.png").read_bytes()
    (tmp_path / "000001.png").write_bytes(whole[:40])
    with pytest.raises(ValueError, match=f"Sample {tmp_path / '000001.png'} cannot be read"):
        load_samples(tmp_path, 2)


@pytest.mark.parametrize("steps", [0, -1, 11, 2.5, True])
def test_the_number_of_steps_must_lie_between_1_and_T(pipeline, tmp_path, steps):
    """0 no longer means T: only None (the default) does."""
    with pytest.raises(ValueError, match="num_inference_steps"):
        generate_samples(pipeline, 2, tmp_path / "s", num_inference_steps=steps, show_progress=False)
    with pytest.raises(ValueError, match="num_inference_steps"):
        next(draw_samples(pipeline, [0], num_inference_steps=steps))
    assert not (tmp_path / "s").exists()


# ---- Loading pipelines ----------------------------------------------------------------------------------------------


def test_a_pipeline_saved_by_plain_diffusers_loads(tiny_unet, tmp_path):
    """The scheduler config is checked before loading, and accepts what diffusers writes (here steps_offset = 1)."""
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=10, steps_offset=1, variance_type="fixed_large")
    diffusers.DDPMPipeline(tiny_unet, scheduler).save_pretrained(tmp_path)
    loaded = load_pipeline(tmp_path, "cpu", variance_type="fixed_small")
    assert loaded.scheduler.config.steps_offset == 1 and loaded.scheduler.config.variance_type == "fixed_small"


def test_pickle_weights_load_only_when_allowed(pipeline, tmp_path):
    pipeline.save_pretrained(tmp_path)
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    pipeline.unet.save_pretrained(tmp_path / "unet", safe_serialization=False)
    with pytest.raises(ValueError, match="pickle"):
        load_pipeline(tmp_path, "cpu")
    assert weights_sha256(load_pipeline(tmp_path, "cpu", allow_pickle=True).unet) == weights_sha256(pipeline.unet)


@pytest.mark.parametrize("parser", [build_parser, evaluate_parser, figures_parser], ids=["sample", "eval", "figures"])
def test_every_option_is_described_and_its_default_said_once(parser):
    for action in parser("ddpm-hf")._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 10, action.dest
        assert action.help.count("default") <= 1, action.help


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


# ---- Samplers (ddpm_hf.samplers): --scheduler and --eta --------------------------------------------------------------


def test_the_command_samples_with_the_scheduler_named_and_records_it(pipeline, tmp_path):
    pipeline.save_pretrained(tmp_path / "pipeline")
    options = ["--num-samples", "2", "--num-inference-steps", "4", "--seed", "3", "--scheduler", "ddim", "--eta", "0.5"]
    assert main([str(tmp_path / "pipeline"), "--output-dir", str(tmp_path / "cli"), *options]) == 0
    manifest = json.loads((tmp_path / "cli" / MANIFEST_NAME).read_text())
    assert (manifest["scheduler_class"], manifest["eta"]) == ("DDIMScheduler", 0.5)
    pipeline.scheduler = diffusers.DDIMScheduler.from_config(pipeline.scheduler.config)
    generate_samples(pipeline, 2, tmp_path / "api", seed=3, num_inference_steps=4, eta=0.5, show_progress=False)
    np.testing.assert_array_equal(load_samples(tmp_path / "cli", 2), load_samples(tmp_path / "api", 2))
    assert json.loads((tmp_path / "api" / MANIFEST_NAME).read_text()) == manifest


def test_a_manifest_written_before_samplers_resumes_as_ddpm(pipeline, tmp_path):
    draw(pipeline, tmp_path, 1)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    del manifest["scheduler_class"], manifest["eta"]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    draw(pipeline, tmp_path, 2)  # no refusal
    pipeline.scheduler = diffusers.DDIMScheduler.from_config(pipeline.scheduler.config)
    with pytest.raises(ValueError, match="scheduler_class 'DDPMScheduler' there, 'DDIMScheduler' now"):
        draw(pipeline, tmp_path, 3)
