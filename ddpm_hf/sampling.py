"""Sampling at scale: N images from a pipeline, spread over the processes of `accelerate launch`, written to disk.

Image i is drawn from its own generator, seeded by (seed, i): the same N images come out whatever the number of
processes or the batch size (the pipeline draws each image's noise from its own generator). Each image is a PNG
`{i:06d}.png`, written under a temporary name and renamed, so an interrupted run leaves only complete images, and a
rerun draws only the missing ones. `samples_to_npz` packs a folder into one `.npz` of uint8 (N, H, W, C), the format
of the usual FID tools.

A samples folder records what drew its images in `manifest.json`, written before the first image: the SHA-256 of the
UNet's weights and its dtype, the scheduler's class and configuration (σ_t² included) and DDIM's η, the seed, the
number of steps, respacing, the image shape and bf16 (the one speed-up that changes pixels by more than rounding).
A rerun adds images to a folder only when all of these agree, so a folder never mixes the samples of two models,
samplers or settings, and an evaluation never measures samples of another pipeline. A folder that holds samples but
no manifest (from an older version, or copied in by hand) is refused too, since what drew them is unknown; so are
sample files of the wrong size or channel count. Each refusal names the folder and the ways out: another
`--output-dir`, or deleting the folder.

    ddpm-hf sample PIPELINE --num-samples 50000 --output-dir samples/      (one process)
    accelerate launch -m ddpm_hf.sampling PIPELINE --num-samples 50000 --output-dir samples/      (several)
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import re
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from .acceleration import Speedups, add_speedup_arguments, speedups_from_arguments
from .hub import HubError, download_pipeline
from .pipeline import DDPMPipeline
from .pipeline_folder import check_pipeline_folder
from .samplers import add_scheduler_arguments, check_eta, check_respace, scheduler_from_name
from .scheduler import DDPMScheduler
from .seeding import Stream, stream_seed

__all__ = [
    "MANIFEST_NAME",
    "sample_seed",
    "load_pipeline",
    "inference_steps",
    "samples_manifest",
    "draw_samples",
    "generate_samples",
    "load_samples",
    "npz_path",
    "samples_to_npz",
    "build_parser",
    "main",
]

MANIFEST_NAME = "manifest.json"  # what drew a samples folder's images (see the module docstring)
_SAMPLE_FILE = re.compile(r"\d{6,}\.png")
_PNG_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # what PIL writes for uint8 images of that many channels


def sample_seed(seed: int, index: int) -> int:
    """The seed of image `index` of a sampling run seeded with `seed`."""
    return stream_seed(seed, Stream.SAMPLES, index)


# ---- Loading a pipeline ----------------------------------------------------------------------------------------------


def _check_scheduler_config(folder: Path) -> None:
    """Build the scheduler of the pipeline in `folder` from its config file before diffusers does: diffusers' own
    scheduler fails on a bad value with a traceback from deep in torch, or not at all (and samples garbage).

    Raises:
        ValueError: the file is not UTF-8 JSON, or a field is bad; the message starts with the file's path.
    """
    path = (folder / "scheduler" if (folder / "scheduler").is_dir() else folder) / "scheduler_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}).") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, not a {type(config).__name__}.")
    try:
        DDPMScheduler.from_config(config)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def load_pipeline(
    name: str | os.PathLike,
    device: str | torch.device,
    variance_type: str | None = None,
    speedups: Speedups | None = None,
    allow_pickle: bool = False,
    scheduler: str | None = None,
    eta: float | None = None,
) -> DDPMPipeline:
    """A pipeline (folder or Hub repo id) on `device`, its progress bar off, with σ_t² of the reverse process set to
    `variance_type` ("fixed_small": σ² = β̃, "fixed_large": σ² = β, §3.2) when given, sampling with `speedups`
    (see `DDPMPipeline.enable_speedups`) when given, and with the scheduler named `scheduler` (see `use_sampler`).
    Pickle weights load only with `allow_pickle`.

    Raises:
        FileNotFoundError: no such folder or repo, or not a pipeline (the missing file is named).
        ValueError: a bad scheduler config (its path and field named), pickle weights without `allow_pickle`,
            corrupt weights, or a sampler option that does not apply (see `use_sampler`).
    """
    folder = Path(name)
    if not folder.is_dir():
        folder = download_pipeline(str(name), allow_pickle=allow_pickle)
    check_pipeline_folder(folder, allow_pickle=allow_pickle)
    _check_scheduler_config(folder)
    pipeline = DDPMPipeline.from_pretrained(folder, allow_pickle=allow_pickle)
    if speedups is not None:
        pipeline.enable_speedups(speedups)
    use_sampler(pipeline, scheduler, eta, variance_type)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def use_sampler(
    pipeline: DDPMPipeline, scheduler: str | None, eta: float | None = None, variance_type: str | None = None
) -> None:
    """Sample `pipeline` with the scheduler named `scheduler` (see `ddpm_hf.samplers.scheduler_from_name`; None:
    its own), built from its configuration; DDPM's σ_t² `variance_type` is applied first.

    Raises:
        ValueError: `variance_type` for a scheduler other than DDPM's, or an `eta` the scheduler does not take.
    """
    if variance_type is not None:
        if not isinstance(pipeline.scheduler, DDPMScheduler):
            raise ValueError(
                f"variance_type (--variance-type) is DDPM's σ_t²; the pipeline's scheduler is the "
                f"{type(pipeline.scheduler).__name__}."
            )
        pipeline.scheduler = DDPMScheduler.from_config(pipeline.scheduler.config, variance_type=variance_type)
    if scheduler is not None:
        pipeline.scheduler = scheduler_from_name(scheduler, pipeline.scheduler.config)
    if variance_type is not None and not isinstance(pipeline.scheduler, DDPMScheduler):
        raise ValueError(f"--variance-type is DDPM's σ_t²: it does not apply to --scheduler {scheduler}.")
    check_eta(pipeline.scheduler, eta)


def inference_steps(pipeline: DDPMPipeline, num_inference_steps: int | None) -> int:
    """The number of reverse steps to sample with: `num_inference_steps`, or T when it is None.

    Raises:
        ValueError: it is not an integer in [1, T] (0 does not mean T: only None does).
    """
    T = pipeline.scheduler.config.num_train_timesteps
    if num_inference_steps is None:
        return T
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int):
        raise ValueError(f"num_inference_steps must be an integer, got {num_inference_steps!r}.")
    if not 1 <= num_inference_steps <= T:
        raise ValueError(
            f"num_inference_steps (--num-inference-steps) must lie in [1, {T}], the steps the model was trained "
            f"with (num_train_timesteps), got {num_inference_steps}."
        )
    return num_inference_steps


# ---- Drawing ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def draw_samples(
    pipeline: DDPMPipeline,
    indices: Sequence[int],
    seed: int = 0,
    batch_size: int = 64,
    num_inference_steps: int | None = None,
    respace: bool = False,
    eta: float | None = None,
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Draw the images `indices` of a sampling run seeded with `seed`, `batch_size` at a time; yield each batch's
    indices and its images as uint8 (n, H, W, C), rounded as PIL conversion rounds them. `eta`: DDIM's η."""
    steps = inference_steps(pipeline, num_inference_steps)
    device = pipeline._execution_device
    for start in range(0, len(indices), batch_size):
        batch = list(indices[start : start + batch_size])
        generators = [torch.Generator(device).manual_seed(sample_seed(seed, i)) for i in batch]
        images = pipeline(
            len(batch), generator=generators, num_inference_steps=steps, respace=respace, eta=eta, output_type="np"
        ).images
        yield batch, (images * 255).round().astype(np.uint8)


def weights_sha256(module: torch.nn.Module) -> str:
    """The SHA-256 of a network's state dict: names, dtypes, shapes and bytes, whatever its device or memory layout."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def samples_manifest(
    pipeline: DDPMPipeline, seed: int, num_inference_steps: int, respace: bool, eta: float | None = None
) -> dict[str, Any]:
    """What determines the pixels of the images a sampling run draws (the `manifest.json` of its folder)."""
    # The fields the scheduler's class takes: a DDIM built from a DDPM's configuration may or may not carry DDPM's
    # σ_t² along (diffusers keeps unused fields unless they were defaults), which changes nothing it draws.
    fields = inspect.signature(type(pipeline.scheduler).__init__).parameters
    scheduler = {key: value for key, value in pipeline.scheduler.config.items() if key in fields}
    return {
        "unet_sha256": weights_sha256(pipeline.unet),
        "unet_dtype": str(pipeline.unet.dtype).removeprefix("torch."),
        "scheduler_class": type(pipeline.scheduler).__name__,
        "scheduler": json.loads(json.dumps(scheduler, default=str)),  # plain JSON types, as read back from the file
        "eta": eta,
        "seed": seed,
        "num_inference_steps": num_inference_steps,
        "respace": respace,
        "image_shape": list(pipeline.image_shape),
        "bf16": bool(pipeline.active_speedups().bf16),
    }


def _image_path(folder: Path, index: int) -> Path:
    return folder / f"{index:06d}.png"


def _write_png(image: PIL.Image.Image, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    image.save(temporary, format="PNG")
    os.replace(temporary, path)


def _differences(recorded: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """The fields where two manifests differ, as "field: recorded in the folder → now"."""
    found = []
    for key in sorted(set(recorded) | set(wanted)):
        old, new = recorded.get(key), wanted.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            shorten = key.endswith("sha256") and isinstance(old, str) and isinstance(new, str)
            old, new = (old[:12] + "…", new[:12] + "…") if shorten else (old, new)
            found.append(f"{prefix}{key} {old!r} there, {new!r} now")
    return found


def _read_sample(path: Path, shape: tuple[int, int, int], decode: bool = True) -> np.ndarray | None:
    """The sample PNG `path` as uint8 (H, W, C) (None without `decode`: only its header is read), refused unless it
    is an image of `shape` (C, H, W) as this module writes it."""
    channels, height, width = shape
    wanted, array = (_PNG_MODES.get(channels), (width, height)), None
    try:
        with PIL.Image.open(path) as image:
            found = (image.mode, image.size)
            if decode and found == wanted:
                array = np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError) as error:  # SyntaxError: how PIL reports some malformed headers
        raise ValueError(f"Sample {path} cannot be read ({error}): delete it to draw it again.") from None
    if found != wanted:
        raise ValueError(
            f"Sample {path} is a {found[1][0]}×{found[1][1]} {found[0]} image, but the pipeline draws {width}×{height} "
            f"{wanted[0]} images: it was not drawn by this pipeline; delete it, or the folder."
        )
    return None if array is None else array.reshape(height, width, channels)


def _claim_samples_folder(folder: Path, manifest: dict[str, Any], existing: Sequence[int]) -> None:
    """Check that the samples in `folder` were drawn as `manifest` says and that the images `existing` have the
    right size, then record the manifest (before any image is written).

    Raises:
        ValueError: `folder` is a file, its manifest differs or is unreadable, it holds samples but no manifest, or
            a sample file is not an image of the pipeline's size and channels.
    """
    ways_out = f"choose another --output-dir, or delete {folder} to draw them again"
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"The samples folder {folder} is a file: choose another --output-dir.")
    # The images are listed before the manifest is read: a process that sees another's image also sees the manifest
    # that process wrote before it.
    samples = sorted(p.name for p in folder.iterdir() if _SAMPLE_FILE.fullmatch(p.name)) if folder.is_dir() else []
    path = folder / MANIFEST_NAME
    if path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"The samples manifest {path} cannot be read ({error}): {ways_out}.") from None
        if isinstance(recorded, dict):  # manifests written before other schedulers were DDPM's
            recorded.setdefault("scheduler_class", "DDPMScheduler")
        differences = _differences(recorded, manifest) if isinstance(recorded, dict) else ["not a JSON object"]
        if differences:
            raise ValueError(
                f"{folder} holds samples drawn with other settings ({'; '.join(differences)}): resuming would mix "
                f"them with these; {ways_out}."
            )
    elif samples:
        raise ValueError(
            f"{folder} holds {len(samples)} sample image(s) ({samples[0]}, …) but no {MANIFEST_NAME}, so what drew "
            f"them is unknown (an older ddpm-hf, or another tool): {ways_out}."
        )
    for index in existing:
        _read_sample(_image_path(folder, index), tuple(manifest["image_shape"]), decode=False)
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        # Every process writes the same manifest, each under its own temporary name, renamed into place.
        temporary = folder / f".{MANIFEST_NAME}.{uuid.uuid4().hex}.tmp"
        temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(temporary, path)


@torch.no_grad()
def generate_samples(
    pipeline: DDPMPipeline,
    num_samples: int,
    output_dir: str | os.PathLike,
    seed: int = 0,
    batch_size: int = 64,
    num_inference_steps: int | None = None,
    respace: bool = False,
    eta: float | None = None,
    process_index: int = 0,
    num_processes: int = 1,
    show_progress: bool = True,
) -> list[int]:
    """Draw the images 0 … num_samples − 1 that this process owns (i ≡ process_index mod num_processes) and that
    are not on disk yet, as PNG files in `output_dir`; return the indices drawn.

    Args:
        pipeline: the DDPM to sample (its scheduler's T is the default number of steps).
        num_samples: N, the size of the whole sample over all processes.
        seed: image i is drawn from a generator seeded with `sample_seed(seed, i)`.
        batch_size: images per call of the pipeline; it does not change the images.
        num_inference_steps: reverse steps (default: T, the paper's protocol); `respace` and `eta` as in the
            pipeline.

    Raises:
        ValueError: bad counts or steps, or a folder whose samples were drawn otherwise (see the module docstring);
            raised before anything is drawn or written.
    """
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    channels = pipeline.image_shape[0]
    if channels not in _PNG_MODES:
        raise ValueError(f"Samples are written as PNG files, of 1, 3 or 4 channels; the UNet draws {channels}.")
    steps = inference_steps(pipeline, num_inference_steps)
    folder = Path(output_dir)
    owned = range(process_index, num_samples, num_processes)
    existing = [i for i in owned if _image_path(folder, i).is_file()]
    check_eta(pipeline.scheduler, eta)
    check_respace(pipeline.scheduler, respace)
    _claim_samples_folder(folder, samples_manifest(pipeline, seed, steps, respace, eta), existing)
    mine = sorted(set(owned) - set(existing))
    sampler = "" if isinstance(pipeline.scheduler, DDPMScheduler) else f" of the {type(pipeline.scheduler).__name__}"
    description = f"Sampling ({steps} steps{sampler}{', respaced' if respace else ''})"
    progress = tqdm(total=len(mine), desc=description, unit="img", disable=not show_progress)
    for indices, images in draw_samples(pipeline, mine, seed, batch_size, steps, respace, eta):
        for index, image in zip(indices, images, strict=True):
            _write_png(
                PIL.Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image), _image_path(folder, index)
            )
        progress.update(len(indices))
    progress.close()
    return mine


def load_samples(
    folder: str | os.PathLike, indices: int | Sequence[int], shape: tuple[int, int, int] | None = None
) -> np.ndarray:
    """The images `indices` (an int N: 0 … N − 1) of a sample folder as uint8 (n, H, W, C).

    Args:
        shape: (C, H, W) every image must have (default: that of the first image).

    Raises:
        FileNotFoundError: an image is missing (the first one is named).
        ValueError: an image cannot be read, or has another size or channel count (named).
    """
    folder = Path(folder)
    indices = range(indices) if isinstance(indices, int) else indices
    missing = [i for i in indices if not _image_path(folder, i).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} sample(s) missing in {folder}, the first {_image_path(folder, missing[0])}."
        )
    if shape is None and len(indices):
        with PIL.Image.open(_image_path(folder, indices[0])) as first:
            shape = (len(first.getbands()), first.height, first.width)
    return np.stack([_read_sample(_image_path(folder, index), shape) for index in indices])


def npz_path(path: str | os.PathLike) -> Path:
    """The file an `.npz` named `path` is written to (numpy adds `.npz` to a name without it), checked before any
    sampling.

    Raises:
        ValueError: `path` is a folder, or its folder does not exist.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--npz {path} is a folder: give a file name, such as {path / 'samples.npz'}.")
    if not path.parent.is_dir():
        raise ValueError(f"--npz {path}: the folder {path.parent} does not exist.")
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def samples_to_npz(folder: str | os.PathLike, num_samples: int, path: str | os.PathLike) -> Path:
    """Pack a sample folder into one `.npz` holding `arr_0`, uint8 (N, H, W, C); return the path it was written to
    (`path`, with `.npz` added when it lacks it). The file is written under a temporary name and renamed."""
    path = npz_path(path)
    samples = load_samples(folder, num_samples)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as handle:  # a file object: numpy adds no suffix to it
        np.savez(handle, arr_0=samples)
    os.replace(temporary, path)
    return path


# ---- The command lines of sample, evaluate and figures -----------------------------------------------------------


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that name and load a pipeline, shared by `ddpm-hf sample`, `evaluate` and `figures`."""
    parser.add_argument("pipeline", help="a pipeline folder (save_pretrained's layout) or a Hub repo id")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also load pickle weights (.bin) when there are no safetensors: unpickling can run arbitrary code, so "
        "only for files you trust (default: safetensors only)",
    )


def add_sampling_arguments(parser: argparse.ArgumentParser, seed_help: str, chain_options: bool = True) -> None:
    """The options of how images are drawn: the seed, the scheduler and its steps, `--respace` and `--variance-type`
    (with `chain_options`) and the speed-ups, shared by `ddpm-hf sample`, `evaluate` and `figures`."""
    parser.add_argument("--seed", type=int, default=0, help=f"{seed_help} (default: 0)")
    parser.add_argument(
        "--num-inference-steps",
        type=positive_int,
        default=None,
        help="reverse steps per image, 1 to T (default: T, the full chain the model was trained on)",
    )
    add_scheduler_arguments(parser)
    if chain_options:
        parser.add_argument(
            "--respace",
            action="store_true",
            help="with fewer steps than T, sample on DDPM's respaced chain; DDPM only (default: off)",
        )
        parser.add_argument(
            "--variance-type",
            choices=("fixed_small", "fixed_large"),
            default=None,
            help="σ_t² of DDPM's reverse process: β̃_t or β_t; DDPM only (default: the pipeline's own)",
        )
    add_speedup_arguments(parser)


# What the commands report as refused input (exit status 1): bad values and files (ValueError), missing or unreadable
# files and repos (OSError), and a Hub that could not give a repo (HubError, some of them not OSErrors).
INPUT_ERRORS = (ValueError, OSError, HubError)


def command_error(prog: str, error: Exception) -> int:
    """Print `error` as the one line `{prog}: error: …` and return the exit status of refused input, 1."""
    # The library's messages name its keyword argument; on the command line it is the option --allow-pickle.
    message = " ".join(str(error).split()).replace("pass allow_pickle=True", "pass --allow-pickle")
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 1


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The command line of `ddpm-hf sample`."""
    parser = argparse.ArgumentParser(prog=prog, description="Draw samples of a DDPM pipeline to PNG files.")
    add_pipeline_arguments(parser)
    parser.add_argument("--num-samples", type=positive_int, required=True, help="N, over all processes (required)")
    parser.add_argument(
        "--output-dir",
        type=Path,
        required=True,
        help=f"where {{index:06d}}.png and {MANIFEST_NAME} go; a rerun draws only the missing images (required)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="images per pipeline call and process; it does not change the images (default: 64)",
    )
    parser.add_argument(
        "--npz", type=Path, default=None, help="also pack the samples into this .npz file, uint8 (N, H, W, C)"
    )
    add_sampling_arguments(parser, "image i is drawn from the seed (seed, i)")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m ddpm_hf.sampling") -> int:
    """`ddpm-hf sample` and `accelerate launch -m ddpm_hf.sampling`: draw N samples of a pipeline to a folder."""
    arguments = build_parser(prog).parse_args(argv)
    speedups = speedups_from_arguments(arguments)

    from accelerate import Accelerator

    try:
        npz = None if arguments.npz is None else npz_path(arguments.npz)
        if arguments.output_dir.exists() and not arguments.output_dir.is_dir():
            raise ValueError(f"--output-dir {arguments.output_dir} is a file: choose a folder.")
        state = Accelerator()  # unlike a bare PartialState, it reads `accelerate launch`'s settings (--cpu) as well
        pipeline = load_pipeline(
            arguments.pipeline,
            state.device,
            arguments.variance_type,
            speedups,
            arguments.allow_pickle,
            arguments.scheduler,
            arguments.eta,
        )
        drawn = generate_samples(
            pipeline,
            arguments.num_samples,
            arguments.output_dir,
            seed=arguments.seed,
            batch_size=arguments.batch_size,
            num_inference_steps=arguments.num_inference_steps,
            respace=arguments.respace,
            eta=arguments.eta,
            process_index=state.process_index,
            num_processes=state.num_processes,
            show_progress=state.is_main_process,
        )
        print(f"process {state.process_index}/{state.num_processes}: drew {len(drawn)} images", flush=True)
        state.wait_for_everyone()
        if npz is not None and state.is_main_process:
            print(f"Samples packed into {samples_to_npz(arguments.output_dir, arguments.num_samples, npz)}")
    except INPUT_ERRORS as error:
        return command_error(prog, error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
