"""`ddpm-hf train` refuses bad input before it trains or writes anything: one line naming what and where, exit
status 1 (2 for a malformed command line), and the files of an earlier run byte for byte as they were.

A new option gets a row in `ROWS` (options and files) or `RUN_ROWS` (against a finished run's folder).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bad_input import Refusal, assert_refused
from safetensors import safe_open
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = [
    "train", "--unet", "ddpm-tiny", "--train-batch-size", "4", "--num-train-timesteps", "10", "--report-to", "none",
    "--num-sample-images", "2", "--sample-inference-steps", "2", "--logging-steps", "1", "--max-train-steps", "1",
]  # fmt: skip
OUT = ["--output-dir", "{tmp}/out"]

ROWS = [
    Refusal("unknown preset", [*TINY, *OUT, "--preset", "cifar"], r"preset must be one of \['ddpm-256'"),
    Refusal("not a number", [*TINY, *OUT, "--max-train-steps", "many"], r"--max-train-steps: 'many' is not a int", 2),
    Refusal("zero steps", [*TINY, *OUT, "--max-train-steps", "0"], "max_train_steps must be a positive integer"),
    Refusal("infinite learning rate", [*TINY, *OUT, "--learning-rate", "inf"], "learning_rate must be a finite number"),
    Refusal("NaN beta", [*TINY, *OUT, "--beta-end", "nan"], "beta_end must be a finite number"),
    Refusal("bad precision", [*TINY, *OUT, "--mixed-precision", "fp8"], "mixed_precision must be one of"),
    Refusal(
        "unknown sampler",
        [*TINY, *OUT, "--scheduler", "ddim2"],
        r"unknown scheduler 'ddim2': use ddpm, ddim, dpm-solver\+\+, unipc, euler, euler-ancestral, heun, pndm",
    ),
    Refusal("eta without DDIM", [*TINY, *OUT, "--eta", "0.5"], r"eta \(--eta\) is DDIM's noise scale; the DDPMSchedu"),
    Refusal("negative eta", [*TINY, *OUT, "--scheduler", "ddim", "--eta", "-1"], r"eta \(--eta\) must be a finite num"),
    Refusal("push without repo", [*TINY, *OUT, "--push-to-hub"], r"push_to_hub needs hub_repo_id"),
    Refusal(
        "resolution vs downsampling",
        [*TINY, *OUT, "--resolution", "17"],
        r"UNet 'ddpm-tiny': the image size 17 must be a positive multiple of 2",
    ),
    Refusal(
        "resolution vs downsampling, preset",
        ["train", "--unet", "ddpm-cifar10", "--resolution", "36", *OUT],
        r"image size 36 must be a positive multiple of 8",
    ),
    Refusal("missing UNet file", [*TINY, *OUT, "--unet", "{tmp}/nothing.json"], "neither a UNet preset"),
    Refusal(
        "malformed UNet JSON",
        [*TINY, *OUT, "--unet", "{tmp}/broken.json"],
        r"UNet config .*broken.json cannot be read as JSON",
    ),
    Refusal(
        "non-UNet JSON",
        [*TINY, *OUT, "--unet", "{tmp}/scheduler.json"],
        r"scheduler.json is a DDPMScheduler config; a UNet2DModel config is needed",
    ),
    Refusal("UNet JSON list", [*TINY, *OUT, "--unet", "{tmp}/list.json"], r"list.json must hold a JSON object"),
    Refusal(
        "UNet JSON unknown key",
        [*TINY, *OUT, "--unet", "{tmp}/extra.json"],
        r"extra.json has argument\(s\) UNet2DModel does not take: \['wings'\]",
    ),
    Refusal(
        "config: key not a string",
        [*TINY, *OUT, "--config", "{tmp}/int-key.yaml"],
        r"int-key.yaml: option names must be strings, got 1",
    ),
    Refusal("config: not UTF-8", [*TINY, *OUT, "--config", "{tmp}/latin1.yaml"], r"latin1.yaml is not UTF-8 text"),
    Refusal(
        "config: infinite rate", [*TINY, *OUT, "--config", "{tmp}/inf.yaml"], "learning_rate must be a finite number"
    ),
    Refusal(
        "config: unknown option",
        [*TINY, *OUT, "--config", "{tmp}/typo.yaml"],
        r"unknown option\(s\) \['lerning_rate'\]",
    ),
    Refusal("missing dataset", [*TINY, *OUT, "--dataset", "{tmp}/no-data"], "does not exist"),
    Refusal("output folder is a file", [*TINY, "--output-dir", "{tmp}/a-file"], r"a-file is a file, not a folder"),
]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """The bad files the rows name."""
    (tmp_path / "broken.json").write_text('{"sample_size": 16,')
    (tmp_path / "scheduler.json").write_text(json.dumps({"_class_name": "DDPMScheduler", "num_train_timesteps": 10}))
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "extra.json").write_text(json.dumps({"sample_size": 16, "wings": 2}))
    (tmp_path / "int-key.yaml").write_text("1: 2\n")
    (tmp_path / "latin1.yaml").write_bytes("seed: 1 # café\n".encode("latin-1"))
    (tmp_path / "inf.yaml").write_text("learning_rate: .inf\n")
    (tmp_path / "typo.yaml").write_text("lerning_rate: 0.1\n")
    (tmp_path / "a-file").write_text("not a folder")
    return tmp_path


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_bad_options_and_files_are_refused_before_anything_is_written(row, files, capsys):
    assert_refused(row, capsys, watched=files, tmp=str(files))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real 2-step run with a checkpoint at each step."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    command = [sys.executable, "-m", "ddpm_hf.train", *TINY[1:], "--max-train-steps", "2", "--checkpointing-steps",
               "1", "--output-dir", str(folder)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def _edit_state(run: Path, step: int, edit) -> None:
    path = run / "checkpoints" / f"checkpoint-{step:07d}" / "state.json"
    state = json.loads(path.read_text())
    edit(state)
    path.write_text(json.dumps(state))


def _poison_weights(run: Path) -> None:
    path = run / "checkpoints" / "checkpoint-0000002" / "model.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(path)
    tensors["conv_in.bias"][0] = float("nan")
    save_file(tensors, str(path), metadata=metadata)


def _swap_in_step_1s_ema(run: Path) -> None:
    checkpoints = run / "checkpoints"
    shutil.copyfile(checkpoints / "checkpoint-0000001" / "ema.safetensors",
                    checkpoints / "checkpoint-0000002" / "ema.safetensors")  # fmt: skip


RESUME = [*TINY, "--output-dir", "{run}", "--resume", "latest", "--max-train-steps", "3"]
RUN_ROWS = [
    (
        Refusal(
            "a new run onto a finished one",
            [*TINY, "--output-dir", "{run}", "--learning-rate", "1e-3"],
            r"run already holds a training run \(checkpoints, .*training_summary.json.*\): continue it with --resume "
            r"latest, or choose a new --output-dir, or pass --overwrite-output-dir",
        ),
        None,
    ),
    (
        Refusal(
            "a new run resuming another folder's checkpoint",
            [*TINY, "--output-dir", "{run}", "--resume", "{run}/../elsewhere/checkpoint-0000002"],
            "already holds a training run",
        ),
        None,
    ),
    (
        Refusal(
            "resume beyond max steps",
            [*RESUME[:-1], "1"],
            r"checkpoint-0000002: it is at step 2, beyond --max-train-steps 1; pass --max-train-steps 2 or "
            r"more",
        ),
        None,
    ),
    (
        Refusal(
            "resume with another batch",
            [*RESUME, "--train-batch-size", "8"],
            r"configuration differs \(train_batch_size: 4 → 8\)",
        ),
        None,
    ),
    (
        Refusal("state.json lacks a key", RESUME, r"checkpoint-0000002/state.json: the field 'ema_updates' is missing"),
        lambda run: _edit_state(run, 2, lambda state: state.pop("ema_updates")),
    ),
    (
        Refusal("state.json has a wrong type", RESUME, r"state.json: step must be int, got str"),
        lambda run: _edit_state(run, 2, lambda state: state.update(step="2")),
    ),
    (
        Refusal("state.json is not JSON", RESUME, r"Corrupt checkpoint file .*state.json"),
        lambda run: (run / "checkpoints" / "checkpoint-0000002" / "state.json").write_text("{"),
    ),
    (
        Refusal(
            "a swapped file",
            RESUME,
            r"ema.safetensors holds the ema tensors of step 1, not the ema tensors of "
            r"step 2: it was swapped in",
        ),
        _swap_in_step_1s_ema,
    ),
    (
        Refusal(
            "non-finite weights",
            RESUME,
            r"model.safetensors holds non-finite values \(in 'conv_in.bias'\).*resume from an earlier checkpoint",
        ),
        _poison_weights,
    ),
]


@pytest.mark.parametrize("row, damage", RUN_ROWS, ids=[row.name for row, _ in RUN_ROWS])
def test_a_finished_run_is_never_overwritten_or_resumed_from_bad_state(row, damage, finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.copytree(run / "checkpoints", tmp_path / "elsewhere")
    assert_refused(row, capsys, watched=tmp_path, setup=damage and (lambda: damage(run)), run=str(run))


def test_the_refused_run_can_still_be_resumed(finished_run, tmp_path, capsys):
    """After a refusal, the earlier run continues with --resume latest, as the message says."""
    from bad_input import run_cli

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert run_cli([*TINY, "--output-dir", str(run), "--learning-rate", "1e-3"]) == 1
    assert run_cli([*TINY, "--output-dir", str(run), "--resume", "latest", "--max-train-steps", "3"]) == 0
    assert json.loads((run / "training_summary.json").read_text())["resumed_from_step"] == 2
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_folder_in_use_by_a_running_training_is_refused_naming_its_process(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from ddpm_hf.output_folder import "
         "claim_output_folder; lock = claim_output_folder(Path(sys.argv[1]), False, False); print('locked', "
         "flush=True); sys.stdin.read()", str(tmp_path / "out")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        row = Refusal("folder in use", [*TINY, *OUT], rf"out is in use by another training run \(host .*, PID "
                                                       rf"{holder.pid}\); wait for it to finish")  # fmt: skip
        assert_refused(row, capsys, watched=tmp_path, tmp=str(tmp_path))
    finally:
        holder.communicate("", timeout=60)
