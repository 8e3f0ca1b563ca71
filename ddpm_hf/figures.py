"""The paper's figures as PNG files, drawn from a pipeline (Ho et al. 2020, Fig. 6, 7 and 8).

    ddpm-hf figures PIPELINE --output-dir figures/ [--dataset NAME --split test]

* `samples.png`: a grid of samples (1000 ancestral steps by default).
* `progressive_generation.png` (Fig. 6): one row per image, x̂_0 predicted along the reverse chain, left to right.
* `shared_latents.png` (Fig. 7): one row per t; the first column is x_t ~ q(x_t | x_0), the others samples of
  p_θ(x_0 | x_t), which share more of x_0 the smaller t is.
* `interpolation.png` (Fig. 8): decoded interpolations (1 − λ) x_t + λ x'_t of two images at t = T/2, for 11 values
  of λ, the two originals at the ends.

Figures 7 and 8 start from dataset images when a dataset is given, else from the pipeline's own samples.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import PIL.Image
import torch

from .acceleration import add_speedup_arguments, speedups_from_arguments
from .pipeline import DDPMPipeline
from .plots import save_image_grid

__all__ = ["write_figures", "main"]


def _pil(images: torch.Tensor) -> list[PIL.Image.Image]:
    """Images in [0, 1] (N, C, H, W) to PIL images."""
    return DDPMPipeline.numpy_to_pil(images.clamp(0, 1).permute(0, 2, 3, 1).cpu().float().numpy())


def write_figures(
    pipeline: DDPMPipeline,
    output_dir: str | Path,
    images: torch.Tensor | None = None,
    seed: int = 0,
    num_samples: int = 64,
    num_inference_steps: int | None = None,
) -> dict[str, Path]:
    """Write the four figures to `output_dir`; return their paths by name.

    Args:
        pipeline: the model to draw from.
        images: at least two dataset images (N, C, H, W) in [−1, 1] for Fig. 7 and 8; default: the first two samples.
        seed: every figure's randomness derives from it.
        num_samples: images in the sample grid (and rows of Fig. 6: the first 8).
        num_inference_steps: steps of the sample grid and of Fig. 6 (default T); Fig. 7 and 8 use the full chain.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    T = pipeline.scheduler.config.num_train_timesteps
    steps = num_inference_steps or T
    generators = [torch.Generator(pipeline._execution_device).manual_seed(seed + i) for i in range(num_samples)]
    paths = {}

    samples = pipeline(num_samples, generator=generators, num_inference_steps=steps, output_type="pt").images
    paths["samples"] = output_dir / "samples.png"
    save_image_grid(_pil(samples), paths["samples"])

    rows = min(8, num_samples)
    progressive = pipeline.progressive_generation(
        rows, generator=generators[:rows], num_inference_steps=steps, num_snapshots=10, output_type="pt"
    )
    snapshots = torch.stack(progressive.pred_original_samples, dim=1).flatten(0, 1)  # row-major: image, then time
    paths["progressive_generation"] = output_dir / "progressive_generation.png"
    save_image_grid(_pil(snapshots), paths["progressive_generation"], columns=len(progressive.timesteps))

    originals = samples[:2] * 2 - 1 if images is None else images[:2]
    if len(originals) < 2:
        raise ValueError("Figures 7 and 8 need at least two images.")
    tiles = []
    for t in (T - 1, 3 * T // 4, T // 2, T // 4):  # the paper's 1000, 750, 500, 250
        shared, x_t = pipeline.shared_latent_samples(
            originals[:1], t, num_samples=3, generator=torch.Generator().manual_seed(seed + t), output_type="pt"
        )
        tiles.extend([x_t[0], *shared])
    paths["shared_latents"] = output_dir / "shared_latents.png"
    save_image_grid(_pil(torch.stack(tiles)), paths["shared_latents"], columns=4)

    lambdas = [i / 10 for i in range(11)]
    mixes = pipeline.interpolate(
        originals[:1], originals[1:2], T // 2, lambdas, generator=torch.Generator().manual_seed(seed), output_type="pt"
    ).images
    ends = (originals[:2].to(mixes.device, mixes.dtype) + 1) / 2
    paths["interpolation"] = output_dir / "interpolation.png"
    save_image_grid(_pil(torch.cat([ends[:1], mixes, ends[1:2]])), paths["interpolation"], columns=len(lambdas) + 2)
    return paths


def main(argv: list[str] | None = None, prog: str = "ddpm-hf figures") -> int:
    """`ddpm-hf figures PIPELINE --output-dir DIR`: write the paper's figures for a pipeline."""
    parser = argparse.ArgumentParser(prog=prog, description="Draw the DDPM paper's figures (Fig. 6-8) as PNG files.")
    parser.add_argument("pipeline", help="a pipeline folder or Hub repo id")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--dataset", default=None, help="images for Fig. 7 and 8 (default: the model's own samples)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--num-inference-steps", type=int, default=None, help="default: T")
    add_speedup_arguments(parser)
    arguments = parser.parse_args(argv)
    speedups = speedups_from_arguments(arguments)
    try:
        pipeline = DDPMPipeline.from_pretrained(arguments.pipeline)
        pipeline.to("cuda" if torch.cuda.is_available() else "cpu").enable_speedups(speedups)
        images = None
        if arguments.dataset is not None:
            from .data import load_training_images, to_model_input

            channels, size, _ = pipeline.image_shape
            data = load_training_images(arguments.dataset, arguments.split, None, size, channels, show_progress=False)
            images = to_model_input(data.images[:2]).to(pipeline._execution_device)
        paths = write_figures(
            pipeline, arguments.output_dir, images, arguments.seed, arguments.num_samples, arguments.num_inference_steps
        )
    except (ValueError, OSError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
