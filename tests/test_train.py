"""Specification of `ddpm-hf train`: real processes, real `accelerate launch`, real files.

These tests run the training command as users do, in subprocesses, on the CPU with tiny networks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import diffusers
import diffusers.utils
import numpy as np
import PIL.Image
import pytest
import torch
from processes import accelerate_launch
from safetensors.torch import load_file
from shared_data import WEIGHTS, needs_weights

from ddpm_hf import DDPMPipeline
from ddpm_hf.sampling import sample_seed
from ddpm_hf.shapes import detection_rate

TINY = [
    "--unet", "ddpm-tiny", "--train-batch-size", "8", "--learning-rate", "1e-3", "--lr-warmup-steps", "2",
    "--logging-steps", "1", "--sample-steps", "1000", "--num-sample-images", "4", "--sample-inference-steps", "5",
    "--report-to", "none", "--num-train-timesteps", "100",
]  # fmt: skip


def train_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "ddpm_hf.train", *arguments]


def accelerate_command(num_processes: int, *arguments: str) -> list[str]:
    return accelerate_launch(num_processes, "ddpm_hf.train", *arguments)


def run(
    command: list[str], timeout: float = 300, threads: int | None = 1, env_overrides: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a command; one thread per process unless `threads` is None (torch's default: all cores)."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONUNBUFFERED": "1", **(env_overrides or {})}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def checkpoint_tensors(output_dir: Path, step: int) -> dict[str, dict[str, torch.Tensor]]:
    folder = output_dir / "checkpoints" / f"checkpoint-{step:07d}"
    return {name: load_file(folder / f"{name}.safetensors") for name in ("model", "ema", "optimizer")}


def test_two_processes_train_the_same_weights_as_one(tmp_path):
    """The global batch, its noise and timesteps do not depend on the number of processes or micro-steps: with
    dropout off (ddpm-tiny), 2 processes × 2 accumulation steps end where 1 process ends, and the ranks agree after
    every step."""
    common = [*TINY, "--max-train-steps", "4", "--checkpointing-steps", "4"]
    one = run(train_command(*common, "--output-dir", str(tmp_path / "one")))
    assert one.returncode == 0, one.stderr[-3000:]
    two = run(
        accelerate_command(2, *common, "--gradient-accumulation-steps", "2", "--output-dir", str(tmp_path / "two"))
    )
    assert two.returncode == 0, two.stderr[-3000:]

    assert json.loads((tmp_path / "two" / "training_summary.json").read_text())["num_processes"] == 2
    rows_one, rows_two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [r["step"] for r in rows_two] == [1, 2, 3, 4]
    assert all(r["replica_spread"] == 0.0 for r in rows_two)  # identical weights on every rank after each step
    for a, b in zip(rows_one, rows_two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["lr"] == a["lr"]
    weights_one, weights_two = checkpoint_tensors(tmp_path / "one", 4), checkpoint_tensors(tmp_path / "two", 4)
    # Summation order differs between 1 and 2 processes; Adam divides by √v, which turns the resulting float32
    # differences of near-zero gradients into differences of up to ~1e-5 here (a wrong batch would give ~1e-3).
    for name, tensor in weights_one["model"].items():
        torch.testing.assert_close(weights_two["model"][name], tensor, rtol=1e-3, atol=1e-4)


def test_a_killed_run_resumed_from_its_checkpoint_ends_bit_identical(tmp_path):
    common = [*TINY, "--max-train-steps", "40", "--checkpointing-steps", "8", "--checkpoints-total-limit", "10"]
    whole = run(train_command(*common, "--output-dir", str(tmp_path / "whole")))
    assert whole.returncode == 0, whole.stderr[-3000:]

    interrupted = tmp_path / "interrupted"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        train_command(*common, "--output-dir", str(interrupted)), stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        for line in process.stderr:
            if "saved checkpoint at step 8" in line:
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.wait(timeout=120)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (interrupted / "pipeline").exists()

    resumed = run(train_command(*common, "--output-dir", str(interrupted), "--resume", "latest"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((interrupted / "training_summary.json").read_text())["resumed_from_step"] >= 8

    expected, got = checkpoint_tensors(tmp_path / "whole", 40), checkpoint_tensors(interrupted, 40)
    for part in ("model", "ema", "optimizer"):
        for name, tensor in expected[part].items():
            assert torch.equal(got[part][name], tensor), f"{part}:{name} differs after resuming"
    assert [(r["step"], r["loss"]) for r in metrics(interrupted)] == [
        (r["step"], r["loss"]) for r in metrics(tmp_path / "whole")
    ]

    changed = run(
        train_command(*common, "--output-dir", str(interrupted), "--resume", "latest", "--train-batch-size", "4")
    )
    assert (
        changed.returncode == 1 and "configuration differs" in changed.stderr and "train_batch_size" in changed.stderr
    )


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_saves_nothing_after_it(tmp_path):
    output_dir = tmp_path / "diverged"
    result = run(train_command(*TINY, "--learning-rate", "1e30", "--lr-warmup-steps", "0", "--max-train-steps", "20",
                               "--checkpointing-steps", "1", "--output-dir", str(output_dir)))  # fmt: skip
    assert result.returncode == 1
    assert "non-finite at step" in result.stderr
    bad_step = int(result.stderr.split("non-finite at step ")[1].split(";")[0])
    saved = sorted(int(p.name.split("-")[1]) for p in (output_dir / "checkpoints").glob("checkpoint-*"))
    assert all(step < bad_step for step in saved)
    for step in saved:
        assert all(torch.isfinite(t).all() for t in checkpoint_tensors(output_dir, step)["model"].values())
    assert not (output_dir / "pipeline").exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--dataset", "no/such-dataset-anywhere"], "does not exist"),
        (["--dataset", "{tmp}/missing-folder"], "does not exist"),
        (["--dataset", "{tmp}/data", "--image-column", "picture"], "'picture' does not exist"),
        (["--dataset", "{tmp}/data", "--split", "validation"], "no split 'validation'"),
        (["--train-batch-size", "6", "--gradient-accumulation-steps", "4"], "gradient_accumulation_steps"),
    ],
)
def test_bad_data_and_options_fail_clearly_before_training(tmp_path, arguments, message):
    import datasets
    import PIL.Image

    images = [PIL.Image.new("RGB", (16, 16), (i, i, i)) for i in range(4)]
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_dict({"img": images}).cast_column("img", datasets.Image()).to_parquet(
        tmp_path / "data" / "train-00000-of-00001.parquet"
    )
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    result = run(train_command(*TINY, "--max-train-steps", "2", "--output-dir", str(tmp_path / "out"), *arguments))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_an_unreadable_image_is_reported_with_its_row_before_training(tmp_path):
    import datasets

    rows = [{"bytes": b"\x89PNG broken", "path": None}] * 3
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_dict({"image": rows}).cast_column("image", datasets.Image()).to_parquet(
        tmp_path / "data" / "train-00000-of-00001.parquet"
    )
    result = run(train_command(*TINY, "--max-train-steps", "2", "--dataset", str(tmp_path / "data"),
                               "--output-dir", str(tmp_path / "out")))  # fmt: skip
    assert result.returncode == 1 and "row 0" in result.stderr


def test_the_command_line_help_lists_the_options():
    result = run(["ddpm-hf", "train", "--help"])
    assert result.returncode == 0
    for option in ("--train-batch-size", "--resume", "--config", "--preset", "--mixed-precision"):
        assert option in result.stdout
    assert run(["ddpm-hf"]).returncode == 2


@pytest.mark.parametrize(
    "arguments",
    [
        ["--loss-type", "vlb", "--variance-type", "learned_range"],  # Table 2: the true bound, learned Σ
        ["--prediction-type", "mean", "--loss-type", "vlb"],  # Table 2: μ̃-prediction
        ["--mixed-precision", "bf16", "--unet", "{tmp}/unet_config.json"],  # a UNet config file, bf16 autocast
    ],
    ids=["vlb-learned-range", "mean-prediction", "bf16-unet-config-file"],
)
def test_the_papers_other_objectives_precision_and_unet_files_train(tmp_path, arguments):
    from ddpm_hf import create_unet

    create_unet("ddpm-tiny", block_out_channels=(16, 16)).save_config(tmp_path)
    (tmp_path / "config.json").rename(tmp_path / "unet_config.json")
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    result = run(train_command(*TINY, "--max-train-steps", "3", "--output-dir", str(tmp_path / "out"), *arguments))
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(row["loss"] > 0 for row in metrics(tmp_path / "out"))
    from ddpm_hf import DDPMPipeline

    pipeline = DDPMPipeline.from_pretrained(tmp_path / "out" / "pipeline")
    pipeline.set_progress_bar_config(disable=True)
    image = pipeline(num_inference_steps=5, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 16, 16, 3) and (image >= 0).all() and (image <= 1).all()
    if "learned_range" in arguments:
        assert pipeline.unet.config.out_channels == 6


def test_channels_last_and_compile_follow_the_plain_loss_curve_and_save_the_same_kind_of_weights(tmp_path):
    """Forced on the CPU (they are on by default on CUDA only): the first step's loss is the plain run's (same batch,
    noise and weights) and the next ones follow it up to the rounding that Adam amplifies; the checkpoint and the
    pipeline hold ordinary (contiguous) safetensors that plain diffusers loads."""
    common = [*TINY, "--max-train-steps", "6", "--checkpointing-steps", "6"]
    fast, plain = tmp_path / "fast", tmp_path / "plain"
    result = run(train_command(*common, "--output-dir", str(fast), "--channels-last", "--torch-compile"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert run(train_command(*common, "--output-dir", str(plain))).returncode == 0
    fast_losses, plain_losses = [r["loss"] for r in metrics(fast)], [r["loss"] for r in metrics(plain)]
    assert fast_losses[0] == pytest.approx(plain_losses[0], rel=1e-5)
    assert fast_losses == pytest.approx(plain_losses, rel=0.05)
    summary = json.loads((fast / "training_summary.json").read_text())
    assert summary["speedups"]["channels_last"] and summary["speedups"]["compile"]
    tensors = checkpoint_tensors(fast, 6)
    assert all(t.is_contiguous() for group in tensors.values() for t in group.values())
    pipeline = diffusers.DDPMPipeline.from_pretrained(fast / "pipeline")
    assert torch.equal(pipeline.unet.conv_in.weight, tensors["ema"]["conv_in.weight"])


BROKEN_COMPILE = """
import sys, torch
from ddpm_hf.train import main

def broken_compile(module, **kwargs):  # compilation is lazy: a failure shows at the first call
    def compiled(*args, **kwargs):
        if sys.argv[1] == "raises":
            raise RuntimeError("BackendCompilerFailed: inductor raised")
        output = module(*args, **kwargs)
        return type(output)(sample=output.sample * float("nan"))
    return compiled

torch.compile = broken_compile
main(sys.argv[2:])
"""


@pytest.mark.parametrize("failure", ["raises", "non-finite"])
def test_a_failing_compile_is_switched_off_and_the_run_trains_as_without_it(tmp_path, failure):
    """`torch.compile` failing at its first call, or giving a non-finite loss where the plain network's is finite:
    one warning naming the speed-up and the error, the step taken again without it, and the run ends exactly where
    a run without compile ends (the same losses, the same weights); the summary says compile was off."""
    common = [*TINY, "--max-train-steps", "3", "--checkpointing-steps", "3"]
    broken = run([sys.executable, "-c", BROKEN_COMPILE, failure, *common, "--torch-compile",
                  "--output-dir", str(tmp_path / "broken")])  # fmt: skip
    assert broken.returncode == 0, broken.stderr[-3000:]
    reason = {"raises": "RuntimeError: BackendCompilerFailed: inductor raised",
              "non-finite": "a non-finite loss where the plain network's is finite"}[failure]  # fmt: skip
    assert f"the speed-up compile failed ({reason}); it is switched off and training goes on" in broken.stderr
    assert "and sampling goes on without it" in broken.stderr  # the grid's pipeline falls back on its own
    plain = run(train_command(*common, "--output-dir", str(tmp_path / "plain")))
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert [r["loss"] for r in metrics(tmp_path / "broken")] == [r["loss"] for r in metrics(tmp_path / "plain")]
    for name, tensor in checkpoint_tensors(tmp_path / "plain", 3)["model"].items():
        assert torch.equal(checkpoint_tensors(tmp_path / "broken", 3)["model"][name], tensor), name
    assert json.loads((tmp_path / "broken" / "training_summary.json").read_text())["speedups"]["compile"] is False


def test_grids_are_drawn_with_the_chosen_sampler_and_the_saved_pipeline_keeps_ddpm(tmp_path):
    """`--scheduler ddim --eta 0.5`: the sample grid is the saved EMA network's DDIM samples (reproduced here from
    the saved pipeline with the run's seeds), the summary records the sampler and its NFE, and the saved pipeline
    holds the run's DDPM scheduler."""
    output = tmp_path / "out"
    result = run(train_command(*TINY, "--max-train-steps", "2", "--output-dir", str(output), "--scheduler", "ddim",
                               "--eta", "0.5"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    index = json.loads((output / "pipeline" / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DDPMScheduler"]
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["sampler"] == {"scheduler": "DDIMScheduler", "num_inference_steps": 100, "eta": 0.5, "nfe": 100}
    pipeline = DDPMPipeline.from_pretrained(output / "pipeline")
    pipeline.scheduler = diffusers.DDIMScheduler.from_config(pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(sample_seed(0, i)) for i in range(4)]  # as `ddpm-hf sample` draws
    images = pipeline(4, generator=generators, num_inference_steps=5, eta=0.5).images
    expected = diffusers.utils.make_image_grid(images, rows=2, cols=2)
    assert np.array_equal(np.asarray(PIL.Image.open(output / "samples.png")), np.asarray(expected))


def test_bf16_training_follows_the_float32_loss_curve(tmp_path):
    """A short run in bf16 autocast reaches the loss of the same run in float32: the mean loss of every window of 25
    steps agrees within 5%, and both fall."""
    common = [*TINY, "--max-train-steps", "150", "--train-batch-size", "16", "--logging-steps", "25",
              "--checkpointing-steps", "1000"]  # fmt: skip
    curves = {}
    for precision in ("bf16", "no"):
        result = run(train_command(*common, "--mixed-precision", precision, "--output-dir", str(tmp_path / precision)))
        assert result.returncode == 0, result.stderr[-3000:]
        curves[precision] = [row["loss"] for row in metrics(tmp_path / precision)]
    assert len(curves["bf16"]) == 6
    assert curves["bf16"] == pytest.approx(curves["no"], rel=0.05)
    assert curves["bf16"][-1] < 0.8 * curves["bf16"][0] and curves["no"][-1] < 0.8 * curves["no"][0]
    summary = json.loads((tmp_path / "bf16" / "training_summary.json").read_text())
    assert summary["mixed_precision"] == "bf16"


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory) -> Path:
    """`ddpm-hf train` as the README runs it (the quickstart preset on the built-in shapes), with faster grids."""
    output_dir = tmp_path_factory.mktemp("quickstart")
    command = ["ddpm-hf", "train", "--output-dir", str(output_dir), "--sample-inference-steps", "100"]
    result = run(command, timeout=900, threads=None)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


def test_training_on_the_builtin_shapes_learns_to_draw_them(quickstart_run):
    """The proof that training learns: most of 32 samples from the trained pipeline (1000 ancestral steps) are one
    solid shape on a plain background, as the analytic detector judges them."""
    pipeline = diffusers.DDPMPipeline.from_pretrained(quickstart_run / "pipeline")
    pipeline.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(1000 + i) for i in range(32)]
    samples = pipeline(batch_size=32, generator=generators, num_inference_steps=1000, output_type="np").images
    rate = detection_rate(samples)
    assert rate >= 0.6, f"only {rate:.0%} of the samples are recognisable shapes"


def test_training_writes_pipeline_grids_curve_summary_logs_and_checkpoints(quickstart_run):
    summary = json.loads((quickstart_run / "training_summary.json").read_text())
    assert summary["steps"] == 1200 and summary["images_seen"] == 1200 * 64
    assert summary["dataset"]["source"] == "builtin:shapes" and summary["config"]["preset"] == "quickstart"
    assert summary["final_loss"] < 0.2 and summary["wall_time_seconds"] > 0
    # the defaults ("auto") on a CPU: no mixed precision, no GPU speed-ups
    assert summary["config"]["mixed_precision"] == "auto" and summary["mixed_precision"] == "no"
    assert not any(summary["speedups"].values())
    index = json.loads((quickstart_run / "pipeline" / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["scheduler"] == ["diffusers", "DDPMScheduler"]
    assert (quickstart_run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    for picture in ("samples.png", "loss_curve.png", "samples/step-0000500.png", "samples/step-0001200.png"):
        assert (quickstart_run / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
    assert list((quickstart_run / "logs").rglob("events.out.tfevents.*"))
    assert sorted(p.name for p in (quickstart_run / "checkpoints").iterdir()) == [
        "checkpoint-0000500", "checkpoint-0001000", "checkpoint-0001200"
    ]  # fmt: skip
    rows = metrics(quickstart_run)
    assert rows[0]["lr"] < rows[-1]["lr"] == pytest.approx(1e-3)  # warm-up, then constant
    assert rows[-1]["loss"] < rows[0]["loss"]


@needs_weights
def test_fid_during_training_is_logged_and_the_best_ema_pipeline_kept(tmp_path):
    """With --fid-steps K the EMA model's FID (against the training split) is measured every K steps and at the end,
    logged to metrics.jsonl, and the pipeline of the lowest FID so far is kept in best_pipeline/."""
    import datasets
    import PIL.Image

    images = [PIL.Image.new("RGB", (16, 16), (20 * i, 100, 255 - 20 * i)) for i in range(12)]
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_dict({"img": images}).cast_column("img", datasets.Image()).to_parquet(
        tmp_path / "data" / "train-00000-of-00001.parquet"
    )
    output = tmp_path / "out"
    result = run(train_command(
        *TINY, "--max-train-steps", "3", "--dataset", str(tmp_path / "data"), "--output-dir", str(output),
        "--fid-steps", "2", "--fid-num-samples", "4", "--fid-inference-steps", "3",
        "--inception-weights", str(WEIGHTS),
    ), env_overrides={"DDPM_HF_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert result.returncode == 0, result.stderr
    fids = [row for row in metrics(output) if "fid" in row]
    assert [row["step"] for row in fids] == [2, 3] and all(row["fid"] > 0 for row in fids)
    best = json.loads((output / "best_fid.json").read_text())
    assert best["fid"] == min(row["fid"] for row in fids) and best["step"] in (2, 3)
    assert best["num_samples"] == 4 and best["num_inference_steps"] == 3
    assert diffusers.DDPMPipeline.from_pretrained(output / "best_pipeline") is not None
    assert list((tmp_path / "cache" / "fid_reference").glob("data-train-16px-*.npz"))
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["best_fid"] == best and summary["final_loss"] > 0  # the loss curve ignores the FID rows
    assert (output / "loss_curve.png").is_file()


def test_a_full_disk_stops_the_run_naming_the_checkpoint_and_keeps_the_previous_one(tmp_path):
    """A disk that fills up (simulated by a file-size limit, which makes larger writes fail as a full disk does) stops
    the run with one line naming the checkpoint that could not be written and the intact previous one, which a
    later `--resume latest` continues from."""
    import resource

    output = tmp_path / "out"
    common = [*TINY, "--max-train-steps", "2", "--checkpointing-steps", "2", "--output-dir", str(output)]
    assert run(train_command(*common)).returncode == 0
    previous = output / "checkpoints" / "checkpoint-0000002"
    files = {p.name: p.read_bytes() for p in previous.iterdir()}

    def small_files_only() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))  # below model.safetensors

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = subprocess.run(train_command(*common[:-4], "--max-train-steps", "4", "--output-dir", str(output), "--resume",
                                        "latest"), capture_output=True, text=True, env=env, timeout=300,
                          preexec_fn=small_files_only)  # fmt: skip
    assert full.returncode == 1 and "Traceback" not in full.stderr
    error = [line for line in full.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "Could not write the checkpoint" in error[0] and "checkpoint-0000004" in error[0]
    assert "the previous checkpoint checkpoint-0000002 is intact" in error[0]
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == files
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["checkpoint-0000002"]


def test_metrics_are_strict_json_even_for_non_finite_values():
    """fp16 steps that overflow have an infinite gradient norm: metrics.jsonl writes it as null, not Infinity."""
    from ddpm_hf.train import _json_line

    line = _json_line({"step": 3, "loss": 0.5, "grad_norm": float("inf"), "lr": float("nan")})
    assert json.loads(line) == {"step": 3, "loss": 0.5, "grad_norm": None, "lr": None}
    assert "Infinity" not in line and "NaN" not in line


def test_expensive_grids_are_announced_and_labelled(tmp_path):
    """A short run whose sample grid costs more than its training says so, with the options that make it cheap, and
    the grid's progress bar says what it is."""
    result = run(train_command(*TINY, "--max-train-steps", "2", "--num-sample-images", "16", "--sample-inference-steps",
                               "100", "--output-dir", str(tmp_path / "out")))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Note: the 1 sample grid(s) of 16 images × 100 steps will take longer than the training itself" in (
        result.stderr
    )
    assert "--num-sample-images 4 --sample-inference-steps 50" in result.stderr
    assert "Sample grid at step 2" in result.stderr


def test_the_help_says_which_preset_applies_and_shows_its_defaults():
    from ddpm_hf.training_config import TRAINING_PRESETS, build_parser

    text = build_parser().format_help()
    assert "else quickstart" in text and "The defaults shown below are quickstart's" in text
    for preset in TRAINING_PRESETS:
        assert preset in text
    assert "--max-train-steps INT\n" in text and "(default: 1200)" in text and "(default: 800000)" not in text
    assert "(default: outputs/quickstart)" in text
    assert "(default: quickstart)" in text and "(default: 16)" in text  # --preset, --resolution
    for option in build_parser()._actions:
        assert option.help, f"{option.option_strings} has no description"
        if option.dest not in ("help", "config"):
            assert option.help.count("default") == 1, f"{option.option_strings}: {option.help}"


def test_every_process_of_a_launch_stops_when_the_folder_is_refused(tmp_path):
    """Only the main process checks the folder; the others are told, so a refused launch ends instead of hanging."""
    output = tmp_path / "out"
    common = [*TINY, "--max-train-steps", "1", "--output-dir", str(output)]
    assert run(train_command(*common)).returncode == 0
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    refused = run(accelerate_command(2, *common, "--learning-rate", "1e-4"), timeout=180)
    assert refused.returncode != 0 and "already holds a training run" in refused.stderr
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == before


def test_a_push_that_fails_after_training_says_the_result_is_saved_and_how_to_push_it(tmp_path, monkeypatch):
    """The push at the end of `--push-to-hub` fails (here: the Hub is offline): the error says that training is
    complete, where its result is, and the `ddpm-hf push` command that uploads it later; nothing is changed."""
    from ddpm_hf.train import PushAfterTrainingError, _push_result
    from ddpm_hf.training_config import TrainingConfig

    output = tmp_path / "out"
    assert run(train_command(*TINY, "--max-train-steps", "1", "--output-dir", str(output))).returncode == 0
    monkeypatch.setenv("HF_TOKEN", "hf_never_printed")
    config = TrainingConfig(push_to_hub=True, hub_repo_id="someone/shapes", output_dir=str(output))
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    with pytest.raises(PushAfterTrainingError) as error:
        _push_result(output, config)
    message = str(error.value)
    assert "\n" not in message and "hf_never_printed" not in message
    assert f"Training is complete and saved in {output}" in message
    assert f"ddpm-hf push {output} --repo-id someone/shapes" in message
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == before
