"""Quickstart: the paper's pipeline in a few lines, saved by ddpm_hf and reloaded by plain diffusers.

Runs on a CPU in under a minute: an untrained `ddpm-small` network (so the images are noise-like), 50 sampling
steps, a sample grid written to `outputs/quickstart/grid.png`. Train a real model with `ddpm-hf train`.
"""

from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers.utils import make_image_grid

from ddpm_hf import DDPMPipeline, DDPMScheduler, create_unet

output_dir = Path("outputs/quickstart")
torch.manual_seed(0)

# The paper's forward process (T = 1000, linear β from 1e-4 to 0.02) and a small version of its CIFAR-10 UNet.
pipeline = DDPMPipeline(unet=create_unet("ddpm-small"), scheduler=DDPMScheduler())

# One generator per image: each image depends on its own seed only.
generators = [torch.Generator().manual_seed(seed) for seed in range(8)]
images = pipeline(batch_size=8, generator=generators, num_inference_steps=50).images
output_dir.mkdir(parents=True, exist_ok=True)
make_image_grid(images, rows=2, cols=4).save(output_dir / "grid.png")

# Saved in diffusers' layout (safetensors only), the pipeline loads with plain diffusers and draws the same images.
pipeline.save_pretrained(output_dir / "pipeline")
plain = diffusers.DDPMPipeline.from_pretrained(output_dir / "pipeline")
ours = pipeline(generator=torch.Generator().manual_seed(0), num_inference_steps=50, output_type="np").images
theirs = plain(generator=torch.Generator().manual_seed(0), num_inference_steps=50, output_type="np").images
print(f"max difference ddpm_hf vs diffusers: {np.abs(ours - theirs).max():.2e}")
print(f"wrote {output_dir / 'grid.png'} and {output_dir / 'pipeline'}")
