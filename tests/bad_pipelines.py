"""Pipeline folders, good and bad, and the refusals every pipeline-loading command shares: the common part of the
bad-input tables of `ddpm-hf sample`, `evaluate` and `figures` (test_bad_input_*.py).

`build_workspace(root)` writes, once per test module, a tiny real pipeline (`ddpm-tiny`, T = 10), its broken
variants, the same network with other weights or four channels, sample folders of an earlier run, and small datasets.
The tables run every command with `watched=root`: a refused command must leave every file and folder there as it was.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import PIL.Image
import torch
from bad_input import Refusal

from ddpm_hf import DDPMPipeline, DDPMScheduler, create_unet
from ddpm_hf.samplers import scheduler_from_name
from ddpm_hf.sampling import MANIFEST_NAME, generate_samples

T = 10  # the tiny pipeline's num_train_timesteps
# A scheduler_config.json field set to a bad value, and what the message must name.
BAD_SCHEDULER_FIELDS = {
    "negative-T": ({"num_train_timesteps": -5}, "num_train_timesteps must be an integer"),
    "string-T": ({"num_train_timesteps": "10"}, "num_train_timesteps must be an integer"),
    "float-T": ({"num_train_timesteps": 10.0}, "num_train_timesteps must be an integer"),
    "unknown-schedule": ({"beta_schedule": "cubic"}, "Unknown beta_schedule 'cubic'"),
    "offset-at-T": ({"steps_offset": T}, "steps_offset must be an integer in \\[0, num_train_timesteps=10\\)"),
}
# A scheduler_config.json that is not a JSON object at all.
BAD_SCHEDULER_FILES = {
    "not-utf8": (b"\xff\xfe{}", "is not UTF-8 text"),
    "malformed-json": (b'{"num_train_timesteps": ', "is not valid JSON"),
}


def _dataset(folder: Path, num_images: int, split: str = "test") -> None:
    """A parquet dataset folder of `num_images` 16×16 RGB images in split `split`."""
    folder.mkdir(parents=True)
    images = [PIL.Image.new("RGB", (16, 16), (200, 30 * i, 10)) for i in range(num_images)]
    dataset = datasets.Dataset.from_dict({"img": images}).cast_column("img", datasets.Image())
    dataset.to_parquet(folder / f"{split}-00000-of-00001.parquet")


def _earlier_runs(root: Path, pipeline: DDPMPipeline) -> None:
    """run-seed0/samples: two samples of `pipeline` (seed 0, T steps, the commands' defaults), with their manifest;
    run-no-manifest: the same without it (an older ddpm-hf); run-wrong-size: one of them replaced by an 8×8 image;
    run-ddim: two samples drawn with DDIM, η = 0.5."""
    generate_samples(pipeline, 2, root / "run-seed0" / "samples", show_progress=False)
    ddpm = pipeline.scheduler
    pipeline.scheduler = scheduler_from_name("ddim", ddpm.config)
    generate_samples(pipeline, 2, root / "run-ddim", eta=0.5, show_progress=False)
    pipeline.scheduler = ddpm
    shutil.copytree(root / "run-seed0", root / "run-no-manifest")
    (root / "run-no-manifest" / "samples" / MANIFEST_NAME).unlink()
    shutil.copytree(root / "run-seed0", root / "run-wrong-size")
    PIL.Image.new("RGB", (8, 8)).save(root / "run-wrong-size" / "samples" / "000001.png")


def build_workspace(root: Path) -> dict[str, str]:
    """Write the folders (see the module docstring) under `root`; return the table fields naming them."""
    torch.manual_seed(0)
    pipeline = DDPMPipeline(create_unet("ddpm-tiny"), DDPMScheduler(num_train_timesteps=T))
    pipeline.set_progress_bar_config(disable=True)
    pipeline.save_pretrained(root / "pipeline")
    config_path = Path("scheduler") / "scheduler_config.json"
    for name, (change, _) in BAD_SCHEDULER_FIELDS.items():
        shutil.copytree(root / "pipeline", root / f"scheduler-{name}")
        config = json.loads((root / "pipeline" / config_path).read_text())
        (root / f"scheduler-{name}" / config_path).write_text(json.dumps({**config, **change}))
    for name, (contents, _) in BAD_SCHEDULER_FILES.items():
        shutil.copytree(root / "pipeline", root / f"scheduler-{name}")
        (root / f"scheduler-{name}" / config_path).write_bytes(contents)
    shutil.copytree(root / "pipeline", root / "pickle-only", ignore=shutil.ignore_patterns("*.safetensors"))
    pipeline.unet.save_pretrained(root / "pickle-only" / "unet", safe_serialization=False)  # a .bin file
    (root / "not-a-pipeline").mkdir()
    (root / "not-a-pipeline" / "config.json").write_text("{}")
    torch.manual_seed(1)
    DDPMPipeline(create_unet("ddpm-tiny"), DDPMScheduler(num_train_timesteps=T)).save_pretrained(root / "other-weights")
    four = DDPMPipeline(create_unet("ddpm-tiny", in_channels=4, out_channels=4), DDPMScheduler(num_train_timesteps=T))
    four.save_pretrained(root / "four-channels")
    _earlier_runs(root, pipeline)
    _dataset(root / "dataset", 3)
    _dataset(root / "one-image", 1)
    (root / "empty-dataset").mkdir()
    (root / "a-file").write_text("not a folder")
    return {name.replace("-", "_"): str(root / name) for name in (
        "pipeline", "pickle-only", "not-a-pipeline", "other-weights", "four-channels", "run-seed0", "run-no-manifest",
        "run-wrong-size", "run-ddim", "dataset", "one-image", "empty-dataset", "a-file",
    )} | {"root": str(root), "out": str(root / "new-output")}  # fmt: skip


def pipeline_rows(command: str, rest: list[str]) -> list[Refusal]:
    """The refusals of every command that loads a pipeline (`ddpm-hf COMMAND PIPELINE rest…`): a missing folder, a
    repo id the Hub cache lacks (the tests run offline), a folder that is not a pipeline, pickle weights without
    --allow-pickle, and each bad scheduler config, whose message must name the config file and the field."""
    config = "scheduler/scheduler_config.json"  # the message starts with the file: …/scheduler-NAME/{config}
    return [
        Refusal("missing pipeline", [command, "{root}/no-such-pipeline", *rest], "no-such-pipeline.* neither"),
        Refusal("Hub repo offline, not cached", [command, "someone/no-such-ddpm", *rest], "someone/no-such-ddpm"),
        Refusal("not a pipeline", [command, "{not_a_pipeline}", *rest], "not-a-pipeline is not a saved pipeline"),
        Refusal("pickle without --allow-pickle", [command, "{pickle_only}", *rest], r"pickle.*pass --allow-pickle"),
    ] + [
        Refusal(
            f"scheduler config {name}", [command, f"{{root}}/scheduler-{name}", *rest], f"{name}/{config}.*{message}"
        )
        for name, (_, message) in {**BAD_SCHEDULER_FIELDS, **BAD_SCHEDULER_FILES}.items()
    ]
