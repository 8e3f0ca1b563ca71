"""Specification of what `ddpm-hf sample` refuses: every bad input gets exit status 1 (refused) or 2 (usage), one line
on stderr that names what is wrong and where, and leaves every file as it was, since it is refused before anything is
drawn or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input import Refusal, assert_refused
from bad_pipelines import build_workspace, pipeline_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SAMPLE = ["sample", "{pipeline}", "--num-samples", "2"]  # fine so far: each row adds what is wrong (the last
# of a repeated option counts, as argparse reads it)
OUT = ["--output-dir", "{out}"]
SEED0 = ["--output-dir", "{run_seed0}/samples"]  # an earlier run's 2 samples: seed 0, 10 steps, fixed_small
OTHER_SETTINGS = r"run-seed0/samples holds samples drawn with other settings \("

ROWS = pipeline_rows("sample", ["--num-samples", "2", *OUT]) + [
    # counts and options
    Refusal("zero samples", [*SAMPLE, "--num-samples", "0", *OUT], "--num-samples: must be at least 1", 2),
    Refusal("negative samples", [*SAMPLE, "--num-samples", "-3", *OUT], "--num-samples", 2),
    Refusal("no sample count", ["sample", "{pipeline}", *OUT], "--num-samples", 2),
    Refusal("no output folder", SAMPLE, "--output-dir", 2),
    Refusal("zero batch size", [*SAMPLE, "--batch-size", "0", *OUT], "--batch-size: must be at least 1", 2),
    Refusal("batch size not a number", [*SAMPLE, "--batch-size", "x", *OUT], "--batch-size: 'x' is not an integer", 2),
    Refusal("zero steps (not T)", [*SAMPLE, "--num-inference-steps", "0", *OUT],
            "--num-inference-steps: must be at least 1", 2),
    Refusal("more steps than T", [*SAMPLE, "--num-inference-steps", "11", *OUT],
            r"num_inference_steps.* must lie in \[1, 10\].*got 11"),
    Refusal("unknown variance type", [*SAMPLE, "--variance-type", "big", *OUT], "--variance-type", 2),
    Refusal("bad speed-up value", [*SAMPLE, "--compile", "sometimes", *OUT],
            "--compile: 'sometimes' is not one of auto, on, off", 2),
    Refusal("seed not an integer", [*SAMPLE, "--seed", "1.5", *OUT], "--seed", 2),
    # samplers: --eta is DDIM's, --respace and --variance-type DDPM's
    Refusal("unknown scheduler", [*SAMPLE, "--scheduler", "fast", *OUT],
            r"--scheduler: unknown scheduler 'fast': use ddpm, ddim, dpm-solver\+\+, unipc, euler, .*, pndm, or", 2),
    Refusal("eta for Euler", [*SAMPLE, "--scheduler", "euler", "--eta", "0.5", *OUT],
            r"eta \(--eta\) is DDIM's noise scale; the EulerDiscreteScheduler takes none"),
    Refusal("negative eta", [*SAMPLE, "--scheduler", "ddim", "--eta", "-1", *OUT],
            r"eta \(--eta\) must be a finite number ≥ 0, got -1.0"),
    Refusal("eta not a number", [*SAMPLE, "--scheduler", "ddim", "--eta", "x", *OUT], "--eta", 2),
    Refusal("respacing DDIM", [*SAMPLE, "--scheduler", "ddim", "--respace", *OUT],
            r"respace=True \(--respace\) samples DDPM's respaced chain, but the scheduler is the DDIMScheduler"),
    Refusal("DDPM's variance for UniPC", [*SAMPLE, "--scheduler", "unipc", "--variance-type", "fixed_large", *OUT],
            "--variance-type is DDPM's σ_t²: it does not apply to --scheduler unipc"),
    # where the results go
    Refusal("output folder is a file", [*SAMPLE, "--output-dir", "{a_file}"], "--output-dir .*a-file is a file"),
    Refusal("npz is a folder", [*SAMPLE, "--npz", "{root}", *OUT], "--npz .* is a folder: give a file name"),
    Refusal("npz in a missing folder", [*SAMPLE, "--npz", "{root}/no/s.npz", *OUT],
            "--npz .*: the folder .*/no does not exist"),
    # a folder of earlier samples: only the same pipeline with the same settings may add to it
    Refusal("samples of another seed", [*SAMPLE, "--seed", "1", *SEED0],
            OTHER_SETTINGS + r"seed 0 there, 1 now\).*another --output-dir.*delete"),
    Refusal("samples of another pipeline", ["sample", "{other_weights}", "--num-samples", "2", *SEED0],
            OTHER_SETTINGS + r"unet_sha256 '[0-9a-f]{12}…' there, '[0-9a-f]{12}…' now\)"),
    Refusal("samples of another image shape", ["sample", "{four_channels}", "--num-samples", "2", *SEED0],
            OTHER_SETTINGS + r"image_shape \[3, 16, 16\] there, \[4, 16, 16\] now.*unet_sha256"),
    Refusal("samples of other steps", [*SAMPLE, "--num-inference-steps", "5", *SEED0],
            OTHER_SETTINGS + "num_inference_steps 10 there, 5 now"),
    Refusal("samples of another scheduler", [*SAMPLE, "--scheduler", "ddim", *SEED0],
            OTHER_SETTINGS + r".*scheduler_class 'DDPMScheduler' there, 'DDIMScheduler' now"),
    Refusal("samples of another eta", [*SAMPLE, "--scheduler", "ddim", "--eta", "1", "--output-dir", "{run_ddim}"],
            OTHER_SETTINGS.replace("run-seed0/samples", "run-ddim") + r"eta 0.5 there, 1.0 now\)"),
    Refusal("samples of another variance", [*SAMPLE, "--variance-type", "fixed_large", *SEED0],
            OTHER_SETTINGS + "scheduler.variance_type 'fixed_small' there, 'fixed_large' now"),
    Refusal("samples not drawn in bf16", [*SAMPLE, "--bf16", "on", *SEED0],
            OTHER_SETTINGS + "bf16 False there, True now"),
    Refusal("samples without a manifest", [*SAMPLE, "--output-dir", "{run_no_manifest}/samples"],
            r"holds 2 sample image\(s\) .* but no manifest.json.*another --output-dir.*delete"),
    Refusal("a sample of the wrong size", [*SAMPLE, "--output-dir", "{run_wrong_size}/samples"],
            "Sample .*run-wrong-size/samples/000001.png is a 8×8 RGB image, but the pipeline draws 16×16 RGB"),
]  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, str]:
    return build_workspace(tmp_path_factory.mktemp("sample-workspace"))


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_bad_input_is_refused_before_anything_is_drawn(row, workspace, capsys):
    assert_refused(row, capsys, watched=Path(workspace["root"]), **workspace)
