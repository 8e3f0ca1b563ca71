"""Specification of what `ddpm-hf figures` refuses: every bad input gets exit status 1 (refused) or 2 (usage), one line
on stderr that names what is wrong and where, and leaves every file as it was, since it is refused before anything is
drawn or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input import Refusal, assert_refused
from bad_pipelines import build_workspace, pipeline_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OUT = ["--output-dir", "{out}"]
FIGURES = ["figures", "{pipeline}", *OUT]  # fine so far: each row adds what is wrong

ROWS = pipeline_rows("figures", OUT) + [
    Refusal("no output folder", ["figures", "{pipeline}"], "--output-dir", 2),
    Refusal("output folder is a file", ["figures", "{pipeline}", "--output-dir", "{a_file}"],
            "--output-dir .*a-file is a file"),
    Refusal("zero samples", [*FIGURES, "--num-samples", "0"], "--num-samples: must be at least 1", 2),
    Refusal("one sample and no dataset", [*FIGURES, "--num-samples", "1"],
            "Figures 7 and 8 need at least two images; num_samples gives fewer"),
    Refusal("zero steps (not T)", [*FIGURES, "--num-inference-steps", "0"], "--num-inference-steps", 2),
    Refusal("more steps than T", [*FIGURES, "--num-inference-steps", "11"], r"must lie in \[1, 10\].*got 11"),
    Refusal("seed not an integer", [*FIGURES, "--seed", "x"], "--seed", 2),
    Refusal("unknown scheduler", [*FIGURES, "--scheduler", "fast"],
            r"--scheduler: unknown scheduler 'fast': use ddpm, ddim, dpm-solver\+\+, unipc, euler, .*, pndm, or", 2),
    Refusal("eta for UniPC", [*FIGURES, "--scheduler", "unipc", "--eta", "0.5"],
            "the UniPCMultistepScheduler takes none"),
    Refusal("Fig. 6 with DPM-Solver++", [*FIGURES, "--scheduler", "dpm-solver++"],
            r"progressive generation \(Fig. 6\) shows the prediction x̂_0 of each step, which the "
            "DPMSolverMultistepScheduler does not return"),
    Refusal("bad speed-up value", [*FIGURES, "--cuda-graphs", "always"], "--cuda-graphs", 2),
    Refusal("unknown dataset", [*FIGURES, "--dataset", "{root}/no-such-dataset"], "no-such-dataset"),
    Refusal("unknown split", [*FIGURES, "--dataset", "{dataset}", "--split", "nope"], "has no split 'nope'"),
    Refusal("empty dataset folder", [*FIGURES, "--dataset", "{empty_dataset}"], "empty-dataset holds no images"),
    Refusal("a dataset of one image", [*FIGURES, "--dataset", "{one_image}"],
            "Figures 7 and 8 need at least two images; the dataset gives fewer"),
    Refusal("a 4-channel model on RGB data", ["figures", "{four_channels}", *OUT, "--dataset", "{dataset}"],
            r"4 input channels, but .* 1 \(greyscale\) or 3 \(RGB\)"),
]  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, str]:
    return build_workspace(tmp_path_factory.mktemp("figures-workspace"))


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_bad_input_is_refused_before_anything_is_drawn(row, workspace, capsys):
    assert_refused(row, capsys, watched=Path(workspace["root"]), **workspace)
