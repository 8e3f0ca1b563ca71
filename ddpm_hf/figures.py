"""The paper's figures as PNG files, drawn from a pipeline (Ho et al. 2020, Fig. 6, 7 and 8).

    ddpm-hf figures PIPELINE --output-dir figures/ [--dataset NAME --split test]

* `samples.png`: a grid of samples (1000 ancestral steps by default).
* `progressive_generation.png` (Fig. 6): one row per image, x̂_0 predicted along the reverse chain, left to right.
* `shared_latents.png` (Fig. 7): one row per t; the first column is x_t ~ q(x_t | x_0), the others samples of
  p_θ(x_0 | x_t), which share more of x_0 the smaller t is.
* `interpolation.png` (Fig. 8): decoded interpolations (1 − λ) x_t + λ x'_t of two images at t = T/2, for 11 values
  of λ, the two originals at the ends.

Figures 7 and 8 start from dataset images when a dataset is given, else from the pipeline's own samples.
`--scheduler NAME` (and `--eta` for DDIM) draws the grid and Fig. 6 with another sampler; Fig. 7 and 8 always run
DDPM's chain, the training scheduler's.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import PIL.Image
import torch

from .acceleration import speedups_from_arguments
from .pipeline import DDPMPipeline
from .plots import save_image_grid
from .samplers import check_eta, check_progressive_generation, training_scheduler
from .sampling import (
    INPUT_ERRORS,
    add_pipeline_arguments,
    add_sampling_arguments,
    command_error,
    inference_steps,
    load_pipeline,
    positive_int,
    sample_seed,
)
from .seeding import Stream, stream_seed

__all__ = ["write_figures", "build_parser", "main"]


def _pil(images: torch.Tensor) -> list[PIL.Image.Image]:
    """Images in [0, 1] (N, C, H, W) to PIL images."""
    return DDPMPipeline.numpy_to_pil(images.clamp(0, 1).permute(0, 2, 3, 1).cpu().float().numpy())


@contextlib.contextmanager
def _progress_labels(pipeline: DDPMPipeline, show_progress: bool) -> Iterator[Callable[[str], None]]:
    """A function that labels the pipeline's progress bar for the next reverse chains (a figure takes a dozen of
    them, each a bar), shown or not; the pipeline's own bar settings are restored afterwards."""
    previous = dict(getattr(pipeline, "_progress_bar_config", {}))  # where diffusers keeps them

    def label(description: str) -> None:
        pipeline.set_progress_bar_config(**{**previous, "desc": description, "disable": not show_progress})

    try:
        yield label
    finally:
        pipeline.set_progress_bar_config(**previous)


def write_figures(
    pipeline: DDPMPipeline,
    output_dir: str | Path,
    images: torch.Tensor | None = None,
    seed: int = 0,
    num_samples: int = 64,
    num_inference_steps: int | None = None,
    show_progress: bool = True,
    eta: float | None = None,
) -> dict[str, Path]:
    """Write the four figures to `output_dir`; return their paths by name.

    Args:
        pipeline: the model to draw from.
        images: at least two dataset images (N, C, H, W) in [−1, 1] for Fig. 7 and 8; default: the first two samples.
        seed: every figure's randomness derives from it.
        num_samples: images in the sample grid (and rows of Fig. 6: the first 8).
        num_inference_steps: steps of the sample grid and of Fig. 6 (default T); Fig. 7 and 8 use the full chain.
        show_progress: a progress bar per reverse chain, labelled with its figure.
        eta: DDIM's η for the sample grid and Fig. 6.

    The sample grid and Fig. 6 are drawn with the pipeline's scheduler; Fig. 7 and 8 with DDPM's full chain (the
    training scheduler), whatever the pipeline samples with: they diffuse an image with q(x_t | x_0) and run the
    chain back from that x_t.

    Raises:
        ValueError: fewer than two images for Fig. 7 and 8, bad steps or η, or a scheduler that does not return
            x̂_0 (Fig. 6); before anything is drawn or written.
    """
    if (num_samples if images is None else len(images)) < 2:
        source = "num_samples" if images is None else "the dataset"
        raise ValueError(f"Figures 7 and 8 need at least two images; {source} gives fewer.")
    steps = inference_steps(pipeline, num_inference_steps)
    check_progressive_generation(pipeline.scheduler)
    check_eta(pipeline.scheduler, eta)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with _progress_labels(pipeline, show_progress) as label:
        return _draw_figures(pipeline, output_dir, images, seed, num_samples, steps, eta, label)


def _draw_figures(
    pipeline: DDPMPipeline,
    output_dir: Path,
    images: torch.Tensor | None,
    seed: int,
    num_samples: int,
    steps: int,
    eta: float | None,
    label: Callable[[str], None],
) -> dict[str, Path]:
    device = pipeline._execution_device
    generators = [torch.Generator(device).manual_seed(sample_seed(seed, i)) for i in range(num_samples)]
    paths = {}

    label(f"Sample grid ({num_samples} images)")
    samples = pipeline(num_samples, generator=generators, num_inference_steps=steps, output_type="pt", eta=eta).images
    paths["samples"] = output_dir / "samples.png"
    save_image_grid(_pil(samples), paths["samples"])

    rows = min(8, num_samples)
    label(f"Fig. 6: progressive generation ({rows} images)")
    progressive = pipeline.progressive_generation(
        rows, generator=generators[:rows], num_inference_steps=steps, num_snapshots=10, output_type="pt", eta=eta
    )
    snapshots = torch.stack(progressive.pred_original_samples, dim=1).flatten(0, 1)  # row-major: image, then time
    paths["progressive_generation"] = output_dir / "progressive_generation.png"
    save_image_grid(_pil(snapshots), paths["progressive_generation"], columns=len(progressive.timesteps))

    originals = samples[:2] * 2 - 1 if images is None else images[:2]
    sampler = pipeline.scheduler
    pipeline.scheduler = training_scheduler(sampler)
    try:
        paths.update(_draw_ddpm_figures(pipeline, output_dir, originals, seed, label))
    finally:
        pipeline.scheduler = sampler
    return paths


def _figure_generator(seed: int, *keys: int) -> torch.Generator:
    """The generator of a figure's noise (keys: the figure's number, then its t)."""
    return torch.Generator().manual_seed(stream_seed(seed, Stream.FIGURES, *keys))


def _draw_ddpm_figures(
    pipeline: DDPMPipeline, output_dir: Path, originals: torch.Tensor, seed: int, label: Callable[[str], None]
) -> dict[str, Path]:
    """Fig. 7 and 8, which run DDPM's chain (the pipeline's scheduler is DDPM's here)."""
    T = pipeline.scheduler.config.num_train_timesteps
    paths = {}
    tiles = []
    for t in (T - 1, 3 * T // 4, T // 2, T // 4):  # the paper's 1000, 750, 500, 250
        label(f"Fig. 7: shared latents from t = {t + 1}")
        shared, x_t = pipeline.shared_latent_samples(
            originals[:1], t, num_samples=3, generator=_figure_generator(seed, 7, t), output_type="pt"
        )
        tiles.extend([x_t[0], *shared])
    paths["shared_latents"] = output_dir / "shared_latents.png"
    save_image_grid(_pil(torch.stack(tiles)), paths["shared_latents"], columns=4)

    lambdas = [i / 10 for i in range(11)]
    label(f"Fig. 8: interpolation from t = {T // 2 + 1}")
    mixes = pipeline.interpolate(
        originals[:1], originals[1:2], T // 2, lambdas, generator=_figure_generator(seed, 8), output_type="pt"
    ).images
    ends = (originals[:2].to(mixes.device, mixes.dtype) + 1) / 2
    paths["interpolation"] = output_dir / "interpolation.png"
    save_image_grid(_pil(torch.cat([ends[:1], mixes, ends[1:2]])), paths["interpolation"], columns=len(lambdas) + 2)
    return paths


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The command line of `ddpm-hf figures`."""
    parser = argparse.ArgumentParser(prog=prog, description="Draw the DDPM paper's figures (Fig. 6-8) as PNG files.")
    add_pipeline_arguments(parser)
    parser.add_argument("--output-dir", type=Path, required=True, help="where the four PNG files go (required)")
    parser.add_argument(
        "--dataset", default=None, help="images for Fig. 7 and 8, the first two of --split (default: the samples)"
    )
    parser.add_argument("--split", default="test", help="the split of --dataset (default: test)")
    parser.add_argument(
        "--num-samples", type=positive_int, default=64, help="images in the sample grid, at least 2 (default: 64)"
    )
    add_sampling_arguments(parser, "image i of the grid is drawn from the seed seed + i", chain_options=False)
    parser.epilog = "--scheduler and --eta apply to the sample grid and Fig. 6; Fig. 7 and 8 run DDPM's full chain."
    return parser


def main(argv: list[str] | None = None, prog: str = "ddpm-hf figures") -> int:
    """`ddpm-hf figures PIPELINE --output-dir DIR`: write the paper's figures for a pipeline."""
    arguments = build_parser(prog).parse_args(argv)
    speedups = speedups_from_arguments(arguments)
    try:
        if arguments.output_dir.exists() and not arguments.output_dir.is_dir():
            raise ValueError(f"--output-dir {arguments.output_dir} is a file: choose a folder.")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        pipeline = load_pipeline(
            arguments.pipeline,
            device,
            speedups=speedups,
            allow_pickle=arguments.allow_pickle,
            scheduler=arguments.scheduler,
            eta=arguments.eta,
        )
        check_progressive_generation(pipeline.scheduler)  # before the dataset is read
        images = None
        if arguments.dataset is not None:
            from .data import load_training_images, to_model_input

            channels, size, _ = pipeline.image_shape
            data = load_training_images(
                arguments.dataset, arguments.split, None, size, channels, show_progress=False, num_images=2
            )
            images = to_model_input(data.images).to(pipeline._execution_device)
        paths = write_figures(
            pipeline,
            arguments.output_dir,
            images,
            arguments.seed,
            arguments.num_samples,
            arguments.num_inference_steps,
            eta=arguments.eta,
        )
    except INPUT_ERRORS as error:
        return command_error(prog, error)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
