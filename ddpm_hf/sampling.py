"""Sampling at scale: N images from a pipeline, spread over the processes of `accelerate launch`, written to disk.

Image i is drawn from its own generator, seeded by (seed, i): the same N images come out whatever the number of
processes or the batch size (the pipeline draws each image's noise from its own generator). Each image is a PNG
`{i:06d}.png`, written under a temporary name and renamed, so an interrupted run leaves only complete images, and a
rerun draws only the missing ones. `samples_to_npz` packs a folder into one `.npz` of uint8 (N, H, W, C), the format
of the usual FID tools.

    ddpm-hf sample PIPELINE --num-samples 50000 --output-dir samples/      (one process)
    accelerate launch -m ddpm_hf.sampling PIPELINE --num-samples 50000 --output-dir samples/      (several)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from .acceleration import Speedups, add_speedup_arguments, speedups_from_arguments
from .pipeline import DDPMPipeline
from .seeding import stream_seed

__all__ = ["sample_seed", "load_pipeline", "draw_samples", "generate_samples", "load_samples", "samples_to_npz", "main"]

_SAMPLE_STREAM = 3  # the purpose key of sample seeds (see ddpm_hf.seeding)


def sample_seed(seed: int, index: int) -> int:
    """The seed of image `index` of a sampling run seeded with `seed`."""
    return stream_seed(seed, _SAMPLE_STREAM, index)


def load_pipeline(
    name: str | os.PathLike,
    device: str | torch.device,
    variance_type: str | None = None,
    speedups: Speedups | None = None,
) -> DDPMPipeline:
    """A pipeline (folder or Hub repo id) on `device`, its progress bar off, with σ_t² of the reverse process set to
    `variance_type` ("fixed_small": σ² = β̃, "fixed_large": σ² = β, §3.2) when given, and sampling with `speedups`
    (see `DDPMPipeline.enable_speedups`) when given."""
    pipeline = DDPMPipeline.from_pretrained(name)
    if speedups is not None:
        pipeline.enable_speedups(speedups)
    if variance_type is not None:
        pipeline.scheduler = type(pipeline.scheduler).from_config(
            pipeline.scheduler.config, variance_type=variance_type
        )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


@torch.no_grad()
def draw_samples(
    pipeline: DDPMPipeline,
    indices: Sequence[int],
    seed: int = 0,
    batch_size: int = 64,
    num_inference_steps: int | None = None,
    respace: bool = False,
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Draw the images `indices` of a sampling run seeded with `seed`, `batch_size` at a time; yield each batch's
    indices and its images as uint8 (n, H, W, C), rounded as PIL conversion rounds them."""
    steps = num_inference_steps or pipeline.scheduler.config.num_train_timesteps
    device = pipeline._execution_device
    for start in range(0, len(indices), batch_size):
        batch = list(indices[start : start + batch_size])
        generators = [torch.Generator(device).manual_seed(sample_seed(seed, i)) for i in batch]
        images = pipeline(
            len(batch), generator=generators, num_inference_steps=steps, respace=respace, output_type="np"
        ).images
        yield batch, (images * 255).round().astype(np.uint8)


def _image_path(folder: Path, index: int) -> Path:
    return folder / f"{index:06d}.png"


def _write_png(image: PIL.Image.Image, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    image.save(temporary, format="PNG")
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
        num_inference_steps: reverse steps (default: T, the paper's protocol); `respace` as in the pipeline.
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be ≥ 1, got {num_samples} and {batch_size}.")
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    mine = [i for i in range(process_index, num_samples, num_processes) if not _image_path(folder, i).is_file()]
    progress = tqdm(total=len(mine), desc="Sampling", unit="img", disable=not show_progress)
    for indices, images in draw_samples(pipeline, mine, seed, batch_size, num_inference_steps, respace):
        for index, image in zip(indices, images, strict=True):
            _write_png(
                PIL.Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image), _image_path(folder, index)
            )
        progress.update(len(indices))
    progress.close()
    return mine


def load_samples(folder: str | os.PathLike, indices: int | Sequence[int]) -> np.ndarray:
    """The images `indices` (an int N: 0 … N − 1) of a sample folder as uint8 (n, H, W, C).

    Raises:
        FileNotFoundError: an image is missing (the first one is named).
    """
    folder = Path(folder)
    indices = range(indices) if isinstance(indices, int) else indices
    missing = [i for i in indices if not _image_path(folder, i).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} sample(s) missing in {folder}, the first {_image_path(folder, missing[0])}."
        )
    arrays = []
    for index in indices:
        with PIL.Image.open(_image_path(folder, index)) as image:
            array = np.asarray(image, dtype=np.uint8)
        arrays.append(array[..., None] if array.ndim == 2 else array)
    return np.stack(arrays)


def samples_to_npz(folder: str | os.PathLike, num_samples: int, path: str | os.PathLike) -> Path:
    """Pack a sample folder into one `.npz` holding `arr_0`, uint8 (N, H, W, C); return its path."""
    path = Path(path)
    np.savez(path, arr_0=load_samples(folder, num_samples))
    return path


def main(argv: list[str] | None = None, prog: str = "python -m ddpm_hf.sampling") -> int:
    """`ddpm-hf sample` and `accelerate launch -m ddpm_hf.sampling`: draw N samples of a pipeline to a folder."""
    parser = argparse.ArgumentParser(prog=prog, description="Draw samples of a DDPM pipeline to PNG files.")
    parser.add_argument("pipeline", help="a pipeline folder or Hub repo id")
    parser.add_argument("--num-samples", type=int, required=True, help="N, over all processes")
    parser.add_argument("--output-dir", type=Path, required=True, help="where {index:06d}.png go")
    parser.add_argument("--seed", type=int, default=0, help="image i uses the seed (seed, i)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per pipeline call (per process)")
    parser.add_argument("--num-inference-steps", type=int, default=None, help="default: T")
    parser.add_argument("--respace", action="store_true", help="sample fewer steps on the respaced chain")
    parser.add_argument("--variance-type", choices=("fixed_small", "fixed_large"), default=None,
                        help="σ_t² of the reverse process (default: the pipeline's own)")  # fmt: skip
    parser.add_argument("--npz", type=Path, default=None, help="also pack the samples into this .npz")
    add_speedup_arguments(parser)
    arguments = parser.parse_args(argv)
    speedups = speedups_from_arguments(arguments)

    from accelerate import Accelerator

    state = Accelerator()  # unlike a bare PartialState, it reads `accelerate launch`'s settings (--cpu) as well
    try:
        pipeline = load_pipeline(arguments.pipeline, state.device, arguments.variance_type, speedups)
        drawn = generate_samples(
            pipeline,
            arguments.num_samples,
            arguments.output_dir,
            seed=arguments.seed,
            batch_size=arguments.batch_size,
            num_inference_steps=arguments.num_inference_steps,
            respace=arguments.respace,
            process_index=state.process_index,
            num_processes=state.num_processes,
            show_progress=state.is_main_process,
        )
        print(f"process {state.process_index}/{state.num_processes}: drew {len(drawn)} images", flush=True)
        state.wait_for_everyone()
        if arguments.npz is not None and state.is_main_process:
            samples_to_npz(arguments.output_dir, arguments.num_samples, arguments.npz)
    except (ValueError, OSError) as error:  # OSError: a folder or repo that cannot be read or reached
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
