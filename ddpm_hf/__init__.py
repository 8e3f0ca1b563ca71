"""ddpm-hf: Denoising Diffusion Probabilistic Models (Ho, Jain, Abbeel 2020) for the Hugging Face ecosystem."""

from .acceleration import Speedups
from .metrics import VariationalBound, bits_per_dim, frechet_distance, inception_score, variational_bound
from .pipeline import DDPMPipeline, ProgressiveGenerationOutput
from .samplers import SCHEDULER_NAMES, scheduler_from_name
from .scheduler import DDPMScheduler, DDPMSchedulerOutput, ModelPrediction
from .unet import PRESETS, create_unet, unet_config

__version__ = "0.1.0"

__all__ = [
    "DDPMPipeline",
    "DDPMScheduler",
    "DDPMSchedulerOutput",
    "ModelPrediction",
    "PRESETS",
    "SCHEDULER_NAMES",
    "ProgressiveGenerationOutput",
    "Speedups",
    "VariationalBound",
    "bits_per_dim",
    "create_unet",
    "frechet_distance",
    "inception_score",
    "scheduler_from_name",
    "unet_config",
    "variational_bound",
]
