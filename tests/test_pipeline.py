"""Specification of `ddpm_hf.DDPMPipeline`.

* It saves in diffusers' standard layout, safetensors only, under diffusers' own class names, so that plain
  `diffusers.DDPMPipeline` (in an interpreter without ddpm_hf) loads it and draws the same images for the same seed.
* It loads what plain diffusers saves and the flat, legacy-keyed layout of the `google/ddpm-*` repos.
* It refuses pickle weights unless explicitly allowed, and names missing or corrupt files.
* `__call__` samples exactly as `diffusers.DDPMPipeline` does (Algorithm 2 of Ho et al. 2020), with per-image
  generators, respacing and a per-step callback; the paper's figures (progressive generation, shared latents,
  interpolation) are methods of the pipeline.

Everything runs on the `ddpm-tiny` UNet (16×16) with schedulers of few steps.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import warnings
from itertools import pairwise
from pathlib import Path

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import load_file, save_file

import ddpm_hf

diffusers_logging.disable_progress_bar()  # the "Loading pipeline components" bars of from_pretrained

T = 20  # training steps of the test schedulers, where the test is not about the paper's T = 1000
SIZE = 16  # the ddpm-tiny UNet's sample size
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}
STANDARD_LAYOUT = {
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
}
# The attention parameter names of the converted Google checkpoints (diffusers < 0.14) and their current names.
LEGACY_ATTENTION_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
GOOGLE_SCHEDULER_CONFIG = {
    "_class_name": "DDPMScheduler",
    "_diffusers_version": "0.1.1",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "num_train_timesteps": 1000,
    "trained_betas": None,
    "variance_type": "fixed_small",
}
GOOGLE_MODEL_INDEX = {
    "_class_name": "DDPMPipeline",
    "_diffusers_version": "0.1.1",
    "scheduler": ["diffusers", "DDPMScheduler"],
    "unet": ["diffusers", "UNet2DModel"],
}


# -------------------------------------------------------------------------------------------------------------
# Helpers and fixtures
# -------------------------------------------------------------------------------------------------------------


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def generators(*seeds: int) -> list[torch.Generator]:
    return [generator(seed) for seed in seeds]


def quiet(pipeline: diffusers.DiffusionPipeline) -> diffusers.DiffusionPipeline:
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def diffusers_twin(pipe: ddpm_hf.DDPMPipeline) -> diffusers.DDPMPipeline:
    """Plain `diffusers.DDPMPipeline` with the same UNet and the same scheduler configuration as `pipe`."""
    scheduler = diffusers.DDPMScheduler.from_config(pipe.scheduler.config)
    return quiet(diffusers.DDPMPipeline(unet=pipe.unet, scheduler=scheduler))


def files_of(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def hashes_of(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in files_of(folder)}


def assert_same_state_dict(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(actual) == set(expected), set(actual) ^ set(expected)
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


def legacy_name(key: str) -> str:
    """`mid_block.attentions.0.to_q.weight` → `mid_block.attentions.0.query.weight`; other keys unchanged."""
    match = re.fullmatch(r"(.*\.attentions\.\d+)\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)", key)
    return f"{match[1]}.{LEGACY_ATTENTION_NAMES[match[2]]}.{match[3]}" if match else key


def make_image(seed: int, low: float = -0.5, high: float = 0.5) -> torch.Tensor:
    """One image x_0 (1, 3, 16, 16) with values in [low, high] ⊂ [−1, 1]."""
    return torch.rand(1, 3, SIZE, SIZE, generator=generator(seed)) * (high - low) + low


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def pipe(tiny_unet) -> ddpm_hf.DDPMPipeline:
    """A ddpm_hf pipeline with the tiny UNet and the paper's linear schedule over T = 20 steps."""
    return quiet(ddpm_hf.DDPMPipeline(tiny_unet, ddpm_hf.DDPMScheduler(num_train_timesteps=T)))


@pytest.fixture
def saved(pipe, tmp_path) -> Path:
    """`pipe` saved by `save_pretrained`."""
    folder = tmp_path / "saved"
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture
def google_folder(tiny_unet, tmp_path) -> Path:
    """A pipeline in the flat layout of `google/ddpm-cifar10-32`: config, legacy-keyed weights and scheduler config
    at the root, written as the original conversion wrote them (no unet/ or scheduler/ subfolder)."""
    folder = tmp_path / "google"
    folder.mkdir()
    weights = {legacy_name(key): tensor.contiguous() for key, tensor in tiny_unet.state_dict().items()}
    save_file(weights, folder / "diffusion_pytorch_model.safetensors")
    unet_config = {"_class_name": "UNet2DModel", "_diffusers_version": "0.0.4", **ddpm_hf.unet_config("ddpm-tiny")}
    (folder / "config.json").write_text(json.dumps(unet_config, indent=2))
    (folder / "scheduler_config.json").write_text(json.dumps(GOOGLE_SCHEDULER_CONFIG, indent=2))
    (folder / "model_index.json").write_text(json.dumps(GOOGLE_MODEL_INDEX, indent=2))
    return folder


@pytest.fixture
def pickle_folder(saved, tiny_unet) -> Path:
    """`saved` with its UNet weights replaced by a pickle `diffusion_pytorch_model.bin` (and no safetensors)."""
    (saved / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    tiny_unet.save_pretrained(saved / "unet", safe_serialization=False)
    assert files_of(saved / "unet") == {"config.json", "diffusion_pytorch_model.bin"}
    return saved


@pytest.fixture
def nested_folder(saved, tiny_unet) -> Path:
    """`saved` with a whole pipeline as its "unet" component: model_index.json says ["diffusers", "DDPMPipeline"], and
    unet/ holds that pipeline with pickle weights (unet/unet/diffusion_pytorch_model.bin), beside the config and
    safetensors weights a check of the UNet's folder looks for. Loading it would load the nested pickle."""
    inner = diffusers.DDPMPipeline(tiny_unet, diffusers.DDPMScheduler(num_train_timesteps=T))
    inner.save_pretrained(saved / "unet", safe_serialization=False)
    assert (saved / "unet" / "unet" / "diffusion_pytorch_model.bin").is_file()
    assert (saved / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    index = json.loads((saved / "model_index.json").read_text())
    (saved / "model_index.json").write_text(json.dumps({**index, "unet": ["diffusers", "DDPMPipeline"]}))
    return saved


# -------------------------------------------------------------------------------------------------------------
# 1. save_pretrained: diffusers' standard layout, safetensors only, diffusers' class names
# -------------------------------------------------------------------------------------------------------------


class TestSavePretrained:
    def test_writes_exactly_the_standard_diffusers_layout(self, saved):
        """model_index.json, unet/{config.json, weights} and scheduler/scheduler_config.json, nothing else."""
        assert files_of(saved) == STANDARD_LAYOUT

    def test_writes_no_pickle_file(self, saved):
        """No .bin, .pt, .ckpt or other pickle file anywhere in the saved folder."""
        assert not [name for name in files_of(saved) if Path(name).suffix in PICKLE_SUFFIXES]

    def test_model_index_names_diffusers_classes(self, saved):
        """model_index.json names diffusers' own classes, which plain diffusers can import."""
        index = json.loads((saved / "model_index.json").read_text())
        assert index["_class_name"] == "DDPMPipeline"
        assert index["unet"] == ["diffusers", "UNet2DModel"]
        assert index["scheduler"] == ["diffusers", "DDPMScheduler"]

    def test_weights_file_holds_the_unets_state_dict(self, pipe, saved):
        """The safetensors file holds every UNet tensor, under diffusers' current key names."""
        assert_same_state_dict(
            load_file(saved / "unet" / "diffusion_pytorch_model.safetensors"), pipe.unet.state_dict()
        )

    def test_scheduler_config_is_a_diffusers_ddpm_scheduler_config(self, pipe, saved):
        """scheduler_config.json is written under diffusers' class name with the scheduler's configuration."""
        config = json.loads((saved / "scheduler" / "scheduler_config.json").read_text())
        assert config["_class_name"] == "DDPMScheduler"
        assert config["num_train_timesteps"] == T
        loaded = diffusers.DDPMScheduler.from_pretrained(saved / "scheduler")
        assert dict(loaded.config) == {k: v for k, v in pipe.scheduler.config.items() if k in loaded.config}

    def test_refuses_pickle_serialization_and_writes_nothing(self, pipe, tmp_path):
        """safe_serialization=False would write a pickle file: it is a ValueError, raised before writing."""
        with pytest.raises(ValueError, match="safetensors"):
            pipe.save_pretrained(tmp_path / "out", safe_serialization=False)
        assert not (tmp_path / "out").exists()

    def test_model_index_still_names_diffusers_after_assigning_a_ddpm_hf_scheduler(self, pipe, tmp_path):
        """Replacing the scheduler by another ddpm_hf.DDPMScheduler keeps ["diffusers", "DDPMScheduler"]."""
        pipe.scheduler = ddpm_hf.DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
        assert list(pipe.config["scheduler"]) == ["diffusers", "DDPMScheduler"]
        pipe.save_pretrained(tmp_path / "out")
        index = json.loads((tmp_path / "out" / "model_index.json").read_text())
        assert index["scheduler"] == ["diffusers", "DDPMScheduler"]
        assert index["unet"] == ["diffusers", "UNet2DModel"]
        config = json.loads((tmp_path / "out" / "scheduler" / "scheduler_config.json").read_text())
        assert config["beta_schedule"] == "squaredcos_cap_v2"  # the new scheduler was saved


# -------------------------------------------------------------------------------------------------------------
# 2. ddpm_hf → plain diffusers, in an interpreter where ddpm_hf cannot be imported
# -------------------------------------------------------------------------------------------------------------

# argv: folder, seed, batch size, number of steps, output .npy file.
SAMPLE_WITH_PLAIN_DIFFUSERS = """
import importlib.abc
import sys


class NoDdpmHf(importlib.abc.MetaPathFinder):
    '''Make this interpreter one where ddpm_hf is not installed.'''

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ddpm_hf":
            raise ModuleNotFoundError("No module named 'ddpm_hf'", name=name)
        return None


sys.meta_path.insert(0, NoDdpmHf())

import diffusers
import numpy as np
import torch

folder, seed, batch_size, steps, out = sys.argv[1:]
pipe = diffusers.DDPMPipeline.from_pretrained(folder)
assert type(pipe.unet) is diffusers.UNet2DModel, type(pipe.unet)
assert type(pipe.scheduler) is diffusers.DDPMScheduler, type(pipe.scheduler)
pipe.set_progress_bar_config(disable=True)
images = pipe(
    batch_size=int(batch_size),
    generator=torch.Generator().manual_seed(int(seed)),
    num_inference_steps=int(steps),
    output_type="np",
).images
np.save(out, images)
assert "ddpm_hf" not in sys.modules
"""


def test_saved_pipeline_loads_in_plain_diffusers_without_ddpm_hf_and_gives_the_same_images(saved, tmp_path):
    """What ddpm_hf saves, `diffusers.DDPMPipeline.from_pretrained` loads in an interpreter that never imports
    ddpm_hf, and samples the same images as ddpm_hf from the same folder and seed."""
    out = tmp_path / "diffusers_images.npy"
    result = subprocess.run(
        [sys.executable, "-c", SAMPLE_WITH_PLAIN_DIFFUSERS, str(saved), "7", "2", str(T), str(out)],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    theirs = np.load(out)

    ours = quiet(ddpm_hf.DDPMPipeline.from_pretrained(saved))
    images = ours(batch_size=2, generator=generator(7), num_inference_steps=T, output_type="np").images
    assert images.shape == theirs.shape == (2, SIZE, SIZE, 3)
    assert images.std() > 0.01  # real samples, not a constant image
    np.testing.assert_allclose(images, theirs, rtol=0, atol=1e-6)


# -------------------------------------------------------------------------------------------------------------
# 3. plain diffusers → ddpm_hf
# -------------------------------------------------------------------------------------------------------------

# A non-default diffusers scheduler, to show that its configuration, not just its class, carries over.
DIFFUSERS_SCHEDULER_CONFIG = {
    "num_train_timesteps": 30,
    "beta_schedule": "squaredcos_cap_v2",
    "variance_type": "fixed_large",
    "clip_sample_range": 0.9,
}


def test_pipeline_saved_by_plain_diffusers_loads_with_a_ddpm_hf_scheduler_and_gives_the_same_images(
    tiny_unet, tmp_path
):
    """A folder saved by `diffusers.DDPMPipeline` loads into ddpm_hf with the same weights, its scheduler as a
    `ddpm_hf.DDPMScheduler` of the same configuration, and samples the same images for the same seed."""
    # In eval mode, as from_pretrained leaves a network and as ddpm_hf samples: torch's CPU attention kernels for
    # training mode round differently (by ~1e-6), even without dropout.
    original = quiet(diffusers.DDPMPipeline(tiny_unet.eval(), diffusers.DDPMScheduler(**DIFFUSERS_SCHEDULER_CONFIG)))
    original.save_pretrained(tmp_path / "diffusers")

    pipe = quiet(ddpm_hf.DDPMPipeline.from_pretrained(tmp_path / "diffusers"))
    assert isinstance(pipe.scheduler, ddpm_hf.DDPMScheduler)
    for key, value in original.scheduler.config.items():
        if not key.startswith("_"):
            assert pipe.scheduler.config[key] == value, key
    assert_same_state_dict(pipe.unet.state_dict(), tiny_unet.state_dict())

    T_ = DIFFUSERS_SCHEDULER_CONFIG["num_train_timesteps"]
    ours = pipe(batch_size=2, generator=generator(3), num_inference_steps=T_, output_type="np").images
    theirs = original(batch_size=2, generator=generator(3), num_inference_steps=T_, output_type="np").images
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_constructor_converts_a_diffusers_scheduler_to_a_ddpm_hf_scheduler_of_the_same_configuration(tiny_unet):
    """`DDPMPipeline(unet, diffusers.DDPMScheduler(...))` holds a `ddpm_hf.DDPMScheduler` with that config."""
    scheduler = diffusers.DDPMScheduler(**DIFFUSERS_SCHEDULER_CONFIG)
    pipe = ddpm_hf.DDPMPipeline(tiny_unet, scheduler)
    assert isinstance(pipe.scheduler, ddpm_hf.DDPMScheduler)
    assert {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")} == {
        k: v for k, v in scheduler.config.items() if not k.startswith("_")
    }


# -------------------------------------------------------------------------------------------------------------
# 4. The flat layout of the google/ddpm-* repos, with legacy attention key names
# -------------------------------------------------------------------------------------------------------------


class TestGoogleFlatLayout:
    def test_fixture_is_flat_and_uses_the_legacy_attention_names(self, google_folder):
        """The folder under test really is the Google layout: everything at the root, query/key/value/proj_attn."""
        assert files_of(google_folder) == {
            "model_index.json",
            "config.json",
            "diffusion_pytorch_model.safetensors",
            "scheduler_config.json",
        }
        keys = set(load_file(google_folder / "diffusion_pytorch_model.safetensors"))
        for legacy in ("query", "key", "value", "proj_attn", "group_norm"):
            assert any(f".attentions.0.{legacy}.weight" in key for key in keys), legacy
        assert not [key for key in keys if re.search(r"\.(to_q|to_k|to_v|to_out)\.", key)]

    def test_loads_with_every_tensor_under_its_current_name(self, google_folder, tiny_unet):
        """ddpm_hf loads the flat folder; the UNet's state dict is the original, with no key missing or extra."""
        pipe = ddpm_hf.DDPMPipeline.from_pretrained(google_folder)
        assert isinstance(pipe.unet, diffusers.UNet2DModel)
        assert isinstance(pipe.scheduler, ddpm_hf.DDPMScheduler)
        assert pipe.scheduler.config.num_train_timesteps == 1000
        assert_same_state_dict(pipe.unet.state_dict(), tiny_unet.state_dict())

    def test_gives_the_same_images_as_plain_diffusers(self, google_folder):
        """ddpm_hf and diffusers sample the same images from the Google folder for the same seed."""
        ours = quiet(ddpm_hf.DDPMPipeline.from_pretrained(google_folder))
        theirs = quiet(diffusers.DDPMPipeline.from_pretrained(google_folder))
        kwargs = {"batch_size": 2, "num_inference_steps": 50, "output_type": "np"}
        a = ours(generator=generator(5), **kwargs).images
        b = theirs(generator=generator(5), **kwargs).images
        assert ours.scheduler.timesteps[0] == theirs.scheduler.timesteps[0] == 980
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)

    def test_saving_it_again_writes_the_standard_layout_with_current_names(self, google_folder, tmp_path):
        """Loading a Google repo and saving it converts it to the standard layout that diffusers writes today."""
        ddpm_hf.DDPMPipeline.from_pretrained(google_folder).save_pretrained(tmp_path / "converted")
        assert files_of(tmp_path / "converted") == STANDARD_LAYOUT
        keys = set(load_file(tmp_path / "converted" / "unet" / "diffusion_pytorch_model.safetensors"))
        assert "mid_block.attentions.0.to_q.weight" in keys
        assert not [key for key in keys if re.search(r"\.(query|key|value|proj_attn)\.", key)]


# -------------------------------------------------------------------------------------------------------------
# 5. Pickle, missing and corrupt weights
# -------------------------------------------------------------------------------------------------------------

BIN_FILE = re.escape(str(Path("unet") / "diffusion_pytorch_model.bin"))
SAFETENSORS_FILE = re.escape(str(Path("unet") / "diffusion_pytorch_model.safetensors"))


class TestUnsafeAndBrokenFolders:
    def test_pickle_only_weights_are_refused_naming_the_file(self, pickle_folder):
        """A folder whose only UNet weights are a pickle is a ValueError naming the .bin file and how to allow it in
        Python and on the command line, and stays as is."""
        before = hashes_of(pickle_folder)
        with pytest.raises(ValueError, match=BIN_FILE + r".*pass allow_pickle=True \(--allow-pickle on the command"):
            ddpm_hf.DDPMPipeline.from_pretrained(pickle_folder)
        assert hashes_of(pickle_folder) == before

    def test_a_nested_pipeline_as_a_component_is_refused_naming_model_index_and_the_component(self, nested_folder):
        """A component that is itself a pipeline would load its own files, pickles included, past the safetensors
        rule: it is refused before anything is loaded, and the folder stays as is."""
        before = hashes_of(nested_folder)
        index = re.escape(str(nested_folder / "model_index.json"))
        message = index + r': component .unet. is \["diffusers", "DDPMPipeline"\]; a DDPM pipeline.s unet must be'
        with pytest.raises(ValueError, match=message):
            ddpm_hf.DDPMPipeline.from_pretrained(nested_folder)
        with pytest.raises(ValueError, match=message):
            ddpm_hf.DDPMPipeline.from_pretrained(nested_folder, allow_pickle=True)  # allowing pickles is not this
        assert hashes_of(nested_folder) == before

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"scheduler": ["diffusers", "UNet2DModel"]}, r"component .scheduler. is \[.*a diffusers scheduler class"),
            ({"scheduler": ["transformers", "DDPMScheduler"]}, "component .scheduler. is"),
            ({"scheduler": ["diffusers", "NoSuchScheduler"]}, "component .scheduler. is"),
            ({"unet": ["ddpm_hf.unet", "UNet2DModel"]}, r'is .*must be \["diffusers", "UNet2DModel"\]'),
            ({"unet": "UNet2DModel"}, "component .unet. is"),
            ({"scheduler": None}, "component .scheduler. is missing"),
            ({"vae": ["diffusers", "AutoencoderKL"]}, "'vae' is not a component of a DDPM pipeline"),
            ({"_class_name": ["pipeline", "MyPipeline"]}, "names custom code, which is never loaded"),
        ],
        ids=["unet-as-scheduler", "other-library", "unknown-class", "other-unet-library", "not-a-pair", "missing",
             "extra-component", "custom-code"],
    )  # fmt: skip
    def test_model_index_may_name_only_a_unet2dmodel_and_a_diffusers_scheduler(self, saved, change, message):
        index = json.loads((saved / "model_index.json").read_text())
        index = {key: value for key, value in {**index, **change}.items() if value is not None}
        (saved / "model_index.json").write_text(json.dumps(index))
        with pytest.raises(ValueError, match=re.escape(str(saved / "model_index.json")) + ": .*" + message):
            ddpm_hf.DDPMPipeline.from_pretrained(saved)

    def test_any_diffusers_scheduler_class_is_accepted(self, saved, pipe):
        """A DDIMScheduler (or any other diffusers scheduler) in model_index.json loads as that scheduler."""
        index = json.loads((saved / "model_index.json").read_text())
        (saved / "model_index.json").write_text(json.dumps({**index, "scheduler": ["diffusers", "DDIMScheduler"]}))
        loaded = ddpm_hf.DDPMPipeline.from_pretrained(saved)
        assert type(loaded.scheduler) is diffusers.DDIMScheduler
        assert loaded.scheduler.config.num_train_timesteps == pipe.scheduler.config.num_train_timesteps

    def test_pickle_only_weights_load_with_allow_pickle(self, pickle_folder, tiny_unet):
        """With allow_pickle=True the pickle weights load."""
        pipe = ddpm_hf.DDPMPipeline.from_pretrained(pickle_folder, allow_pickle=True)
        assert_same_state_dict(pipe.unet.state_dict(), tiny_unet.state_dict())

    def test_use_safetensors_false_needs_allow_pickle(self, saved):
        """use_safetensors=False asks for pickle weights: a ValueError unless allow_pickle=True is passed too."""
        with pytest.raises(ValueError, match="allow_pickle"):
            ddpm_hf.DDPMPipeline.from_pretrained(saved, use_safetensors=False)

    @pytest.mark.parametrize(
        "keep", [lambda n: n // 2, lambda n: n - 1, lambda n: 4], ids=["half", "last-byte-cut", "inside-header-length"]
    )
    def test_truncated_safetensors_is_a_value_error_naming_the_file(self, saved, keep):
        """A truncated weights file is refused with a ValueError naming it, and is left as it is."""
        weights = saved / "unet" / "diffusion_pytorch_model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes(data[: keep(len(data))])
        before = hashes_of(saved)
        with pytest.raises(ValueError, match=SAFETENSORS_FILE):
            ddpm_hf.DDPMPipeline.from_pretrained(saved)
        assert hashes_of(saved) == before

    def test_missing_weights_file_is_a_file_not_found_error_naming_it(self, saved):
        """A deleted UNet weights file gives FileNotFoundError naming the file that should be there."""
        (saved / "unet" / "diffusion_pytorch_model.safetensors").unlink()
        with pytest.raises(FileNotFoundError, match=SAFETENSORS_FILE):
            ddpm_hf.DDPMPipeline.from_pretrained(saved)

    def test_missing_scheduler_config_is_a_file_not_found_error_naming_it(self, saved):
        (saved / "scheduler" / "scheduler_config.json").unlink()
        with pytest.raises(FileNotFoundError, match=re.escape(str(Path("scheduler") / "scheduler_config.json"))):
            ddpm_hf.DDPMPipeline.from_pretrained(saved)

    def test_unreadable_model_index_is_a_value_error_naming_it(self, saved):
        (saved / "model_index.json").write_text('{"_class_name": "DDPMPipeline",')
        with pytest.raises(ValueError, match="model_index.json"):
            ddpm_hf.DDPMPipeline.from_pretrained(saved)

    def test_folder_without_model_index_is_a_file_not_found_error(self, saved):
        """A folder without model_index.json is not a pipeline."""
        (saved / "model_index.json").unlink()
        with pytest.raises(FileNotFoundError, match="model_index.json"):
            ddpm_hf.DDPMPipeline.from_pretrained(saved)


# -------------------------------------------------------------------------------------------------------------
# 6. __call__: Algorithm 2, as diffusers.DDPMPipeline samples it
# -------------------------------------------------------------------------------------------------------------


class TestCall:
    def test_pil_output_is_a_list_of_rgb_images_of_the_unets_size(self, pipe):
        images = pipe(batch_size=2, generator=generator(0), num_inference_steps=T).images
        assert isinstance(images, list) and len(images) == 2
        for image in images:
            assert isinstance(image, PIL.Image.Image)
            assert image.size == (SIZE, SIZE) and image.mode == "RGB"

    def test_np_output_is_an_nhwc_float_array_in_the_unit_interval(self, pipe):
        images = pipe(batch_size=2, generator=generator(0), num_inference_steps=T, output_type="np").images
        assert isinstance(images, np.ndarray) and images.dtype == np.float32
        assert images.shape == (2, SIZE, SIZE, 3)
        assert images.min() >= 0 and images.max() <= 1

    def test_pt_output_is_an_nchw_tensor_in_the_unit_interval(self, pipe):
        images = pipe(batch_size=2, generator=generator(0), num_inference_steps=T, output_type="pt").images
        assert isinstance(images, torch.Tensor)
        assert images.shape == (2, 3, SIZE, SIZE)
        assert images.min() >= 0 and images.max() <= 1

    def test_output_is_the_final_sample_mapped_to_the_unit_interval_and_clamped(self, tiny_unet):
        """Images are (x_0 / 2 + 0.5).clamp(0, 1), even when x_0 leaves [−1, 1] (here: no x̂_0 clipping)."""
        pipe = quiet(ddpm_hf.DDPMPipeline(tiny_unet, ddpm_hf.DDPMScheduler(num_train_timesteps=T, clip_sample=False)))
        final = []

        def keep_last(pipeline, i, t, tensors):
            final[:] = [tensors["image"].clone()]
            return tensors

        images = pipe(generator=generator(0), num_inference_steps=T, output_type="pt", callback_on_step_end=keep_last)
        assert final[0].abs().max() > 1  # the premise: the unclipped sample leaves [−1, 1]
        assert torch.equal(images.images, (final[0] / 2 + 0.5).clamp(0, 1))

    def test_output_types_hold_the_same_images(self, pipe):
        """ "np" is "pt" in NHWC order, and "pil" is "np" quantized to 8 bits."""
        kwargs = {"batch_size": 2, "num_inference_steps": T}
        pt = pipe(generator=generator(0), output_type="pt", **kwargs).images
        arr = pipe(generator=generator(0), output_type="np", **kwargs).images
        pil = pipe(generator=generator(0), output_type="pil", **kwargs).images
        np.testing.assert_array_equal(arr, pt.permute(0, 2, 3, 1).numpy())
        np.testing.assert_array_equal(np.stack([np.asarray(im) for im in pil]), (arr * 255).round().astype(np.uint8))

    @pytest.mark.parametrize("output_type", ["latent", "numpy", "PIL", None])
    def test_unknown_output_type_is_a_value_error(self, pipe, output_type):
        with pytest.raises(ValueError, match="output_type"):
            pipe(num_inference_steps=T, output_type=output_type)

    def test_return_dict_false_returns_a_one_element_tuple(self, pipe):
        result = pipe(generator=generator(0), num_inference_steps=T, output_type="pt", return_dict=False)
        assert isinstance(result, tuple) and len(result) == 1
        expected = pipe(generator=generator(0), num_inference_steps=T, output_type="pt").images
        assert torch.equal(result[0], expected)

    def test_same_seed_gives_the_same_images_as_diffusers(self, pipe):
        """The full chain of T steps from one generator draws what `diffusers.DDPMPipeline` draws."""
        ours = pipe(batch_size=2, generator=generator(1), num_inference_steps=T, output_type="np").images
        theirs = diffusers_twin(pipe)(batch_size=2, generator=generator(1), num_inference_steps=T, output_type="np")
        assert ours.std() > 0.01
        np.testing.assert_allclose(ours, theirs.images, rtol=0, atol=1e-6)

    def test_each_image_of_a_generator_list_depends_on_its_own_seed_only(self, pipe):
        """Image k of a batch drawn with generators seeded s_1..s_3 is the image drawn alone with seed s_k."""
        seeds = (11, 12, 13)
        batch = pipe(batch_size=3, generator=generators(*seeds), num_inference_steps=T, output_type="np").images
        for k, seed in enumerate(seeds):
            alone = pipe(batch_size=1, generator=generators(seed), num_inference_steps=T, output_type="np").images
            np.testing.assert_allclose(batch[k], alone[0], rtol=0, atol=1e-5)
        assert not np.allclose(batch[0], batch[1], atol=1e-3)

    def test_a_generator_list_gives_the_same_images_as_diffusers(self, pipe):
        seeds = (11, 12, 13)
        kwargs = {"batch_size": 3, "num_inference_steps": T, "output_type": "np"}
        ours = pipe(generator=generators(*seeds), **kwargs).images
        theirs = diffusers_twin(pipe)(generator=generators(*seeds), **kwargs).images
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)

    @pytest.mark.parametrize("length", [2, 4])
    def test_a_generator_list_of_the_wrong_length_is_a_value_error(self, pipe, length):
        with pytest.raises(ValueError, match="generator"):
            pipe(batch_size=3, generator=generators(*range(length)), num_inference_steps=T)

    @pytest.mark.parametrize("batch_size", [0, -1])
    def test_batch_size_must_be_positive(self, pipe, batch_size):
        with pytest.raises(ValueError, match="batch_size"):
            pipe(batch_size=batch_size, num_inference_steps=T)

    def test_sampling_never_uses_dropout_and_leaves_the_unets_mode_as_it_was(self):
        """A UNet with dropout left in training mode samples as in eval mode, and is back in training mode after."""
        torch.manual_seed(0)
        unet = ddpm_hf.create_unet("ddpm-tiny", dropout=0.5)
        pipe = quiet(ddpm_hf.DDPMPipeline(unet, ddpm_hf.DDPMScheduler(num_train_timesteps=T)))
        unet.eval()
        in_eval = pipe(generator=generator(6), num_inference_steps=T, output_type="pt").images
        unet.train()
        in_train = pipe(generator=generator(6), num_inference_steps=T, output_type="pt").images
        assert unet.training
        assert torch.equal(in_train, in_eval)

    def test_fewer_inference_steps_than_training_steps_give_the_same_images_as_diffusers(self, tiny_unet):
        """10 of 50 steps ("leading" spacing: 45, 40, ..., 0) sample as diffusers samples them."""
        pipe = quiet(ddpm_hf.DDPMPipeline(tiny_unet, ddpm_hf.DDPMScheduler(num_train_timesteps=50)))
        twin = diffusers_twin(pipe)
        ours = pipe(batch_size=2, generator=generator(2), num_inference_steps=10, output_type="np").images
        theirs = twin(batch_size=2, generator=generator(2), num_inference_steps=10, output_type="np").images
        assert pipe.scheduler.timesteps.tolist() == twin.scheduler.timesteps.tolist() == list(range(45, -1, -5))
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)

    def test_respaced_chain_starts_at_the_last_training_step_and_ends_at_zero(self, tiny_unet):
        """respace=True samples n steps from t = T−1 (the trained prior's step) down to t = 0."""
        pipe = quiet(ddpm_hf.DDPMPipeline(tiny_unet, ddpm_hf.DDPMScheduler(num_train_timesteps=50)))
        steps = []
        images = pipe(
            batch_size=2,
            generator=generator(2),
            num_inference_steps=10,
            respace=True,
            output_type="np",
            callback_on_step_end=lambda p, i, t, tensors: steps.append(t) or tensors,
        ).images
        timesteps = pipe.scheduler.timesteps.tolist()
        assert timesteps[0] == 49 and timesteps[-1] == 0 and len(timesteps) == 10
        assert all(a > b for a, b in pairwise(timesteps))
        assert steps == timesteps  # the UNet ran once per kept step
        assert images.shape == (2, SIZE, SIZE, 3) and np.isfinite(images).all()

    def test_callback_runs_once_per_step_with_the_step_index_timestep_and_current_sample(self, pipe):
        """callback_on_step_end(pipe, i, t, {"image": x}) is called for i = 0..n−1 with t the scheduler's
        timesteps and x the current sample; returning x unchanged changes nothing."""
        calls = []

        def record(pipeline, i, t, tensors):
            calls.append((pipeline, i, t, tensors["image"].clone()))
            return tensors

        images = pipe(generator=generator(4), num_inference_steps=10, output_type="pt", callback_on_step_end=record)
        assert [i for _, i, _, _ in calls] == list(range(10))
        assert [t for _, _, t, _ in calls] == pipe.scheduler.timesteps.tolist()
        assert all(pipeline is pipe for pipeline, _, _, _ in calls)
        assert torch.equal((calls[-1][3] / 2 + 0.5).clamp(0, 1), images.images)
        without = pipe(generator=generator(4), num_inference_steps=10, output_type="pt").images
        assert torch.equal(images.images, without)

    def test_image_returned_by_the_callback_replaces_the_sample(self, pipe):
        """A callback that returns zeros at the last step makes the output exactly mid-gray, (0 / 2 + 0.5)."""

        def zero_at_last_step(pipeline, i, t, tensors):
            return {"image": torch.zeros_like(tensors["image"])} if t == 0 else tensors

        images = pipe(
            generator=generator(4), num_inference_steps=T, output_type="np", callback_on_step_end=zero_at_last_step
        )
        np.testing.assert_array_equal(images.images, np.full((1, SIZE, SIZE, 3), 0.5, dtype=np.float32))

    def test_callback_tensor_inputs_other_than_image_are_a_value_error(self, pipe):
        with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
            pipe(
                num_inference_steps=T,
                callback_on_step_end=lambda *a: {},
                callback_on_step_end_tensor_inputs=["latents"],
            )


# -------------------------------------------------------------------------------------------------------------
# 7. The paper's figures
# -------------------------------------------------------------------------------------------------------------


class TestProgressiveGeneration:
    def test_final_images_are_those_of_call_with_the_same_seed(self, pipe):
        progressive = pipe.progressive_generation(
            batch_size=2, generator=generator(9), num_inference_steps=T, output_type="pt"
        )
        images = pipe(batch_size=2, generator=generator(9), num_inference_steps=T, output_type="pt").images
        assert torch.equal(progressive.images, images)

    def test_snapshots_at_descending_timesteps_from_the_first_step_to_zero(self, pipe):
        """num_snapshots x̂_0 batches at strictly descending timesteps, from T−1 to 0."""
        out = pipe.progressive_generation(
            batch_size=2, generator=generator(9), num_inference_steps=T, num_snapshots=5, output_type="pt"
        )
        assert len(out.timesteps) == len(out.pred_original_samples) == 5
        assert out.timesteps[0] == T - 1 and out.timesteps[-1] == 0
        assert all(a > b for a, b in pairwise(out.timesteps))
        for snapshot in out.pred_original_samples:
            assert snapshot.shape == (2, 3, SIZE, SIZE)

    def test_snapshots_are_the_schedulers_x0_predictions_along_the_chain(self, pipe):
        """Each snapshot is x̂_0 of eq. 15 at its timestep, as a loop over diffusers' DDPMScheduler computes it; the
        last one (t = 0) is the final sample itself."""
        out = pipe.progressive_generation(
            generator=generator(9), num_inference_steps=T, num_snapshots=4, output_type="pt"
        )

        scheduler = diffusers.DDPMScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(T)
        g = generator(9)
        x = torch.randn(1, 3, SIZE, SIZE, generator=g)
        reference = {}
        with torch.no_grad():
            for t in scheduler.timesteps:
                step = scheduler.step(pipe.unet(x, t).sample, t, x, generator=g)
                reference[int(t)] = (step.pred_original_sample / 2 + 0.5).clamp(0, 1)
                x = step.prev_sample
        for t, snapshot in zip(out.timesteps, out.pred_original_samples, strict=True):
            torch.testing.assert_close(snapshot, reference[t], rtol=0, atol=1e-6)
        assert torch.equal(out.pred_original_samples[-1], out.images)

    def test_zero_snapshots_is_a_value_error(self, pipe):
        with pytest.raises(ValueError, match="num_snapshots"):
            pipe.progressive_generation(num_inference_steps=T, num_snapshots=0)


class TestSharedLatentSamples:
    def test_returns_num_samples_images_and_the_shared_x_t(self, pipe):
        samples, x_t = pipe.shared_latent_samples(
            make_image(0), 1, num_samples=3, generator=generators(1, 2, 3), output_type="pt"
        )
        assert samples.shape == (3, 3, SIZE, SIZE)
        assert x_t.shape == (1, 3, SIZE, SIZE)

    def test_samples_from_a_small_timestep_stay_close_to_the_image(self, pipe):
        """x_1 is barely noised, so both it and the samples decoded from it are close to x_0."""
        image = make_image(0)
        samples, x_t = pipe.shared_latent_samples(
            image, 1, num_samples=3, generator=generators(1, 2, 3), output_type="pt"
        )
        target = image / 2 + 0.5
        torch.testing.assert_close(x_t, target, rtol=0, atol=0.15)
        torch.testing.assert_close(samples, target.expand(3, -1, -1, -1), rtol=0, atol=0.15)

    def test_different_generators_give_different_samples_and_the_same_ones_repeat_them(self, pipe):
        image = make_image(0)
        first, x_t = pipe.shared_latent_samples(
            image, 1, num_samples=3, generator=generators(1, 2, 3), output_type="pt"
        )
        again, x_t_again = pipe.shared_latent_samples(
            image, 1, num_samples=3, generator=generators(1, 2, 3), output_type="pt"
        )
        assert torch.equal(first, again) and torch.equal(x_t, x_t_again)
        assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])

    def test_samples_from_a_large_timestep_differ_between_generators(self, pipe):
        """Fig. 7: from x_t at a large t, samples keep little of the image and differ between generators."""
        samples, _ = pipe.shared_latent_samples(
            make_image(0), T - 1, num_samples=3, generator=generators(1, 2, 3), output_type="pt"
        )
        assert samples.shape == (3, 3, SIZE, SIZE)
        assert not torch.allclose(samples[0], samples[1], atol=1e-3)


class TestInterpolate:
    def test_returns_one_image_per_lambda(self, pipe):
        out = pipe.interpolate(make_image(0), make_image(1), 1, lambdas=(0, 0.5, 1), generator=generator(0))
        assert len(out.images) == 3
        assert all(image.size == (SIZE, SIZE) for image in out.images)

    def test_is_deterministic_given_the_seed(self, pipe):
        a, b = make_image(0), make_image(1)
        first = pipe.interpolate(a, b, 1, lambdas=(0, 0.5, 1), generator=generator(0), output_type="pt").images
        again = pipe.interpolate(a, b, 1, lambdas=(0, 0.5, 1), generator=generator(0), output_type="pt").images
        assert torch.equal(first, again)

    def test_endpoints_differ_when_the_images_differ(self, pipe):
        images = pipe.interpolate(
            make_image(0), make_image(1), 1, lambdas=(0, 1), generator=generator(0), output_type="pt"
        ).images
        assert not torch.allclose(images[0], images[1], atol=1e-2)

    def test_lambda_zero_decodes_image_a_alone(self, pipe):
        """At λ = 0 the output does not depend on image_b; at λ = 1 it does."""
        a = make_image(0)
        with_b = pipe.interpolate(a, make_image(1), 1, lambdas=(0, 1), generator=generator(0), output_type="pt")
        with_c = pipe.interpolate(a, make_image(2), 1, lambdas=(0, 1), generator=generator(0), output_type="pt")
        torch.testing.assert_close(with_b.images[0], with_c.images[0], rtol=0, atol=1e-6)
        assert not torch.allclose(with_b.images[1], with_c.images[1], atol=1e-2)

    def test_the_reverse_noise_is_the_same_for_every_lambda(self, pipe):
        """The noise is fixed across λ (Appendix, Fig. 8), so equal λs give equal images."""
        images = pipe.interpolate(
            make_image(0), make_image(1), 1, lambdas=(0.3, 0.3), generator=generator(0), output_type="pt"
        ).images
        assert torch.equal(images[0], images[1])

    def test_interpolates_at_the_papers_timestep(self, pipe):
        """Fig. 8 mixes x_t at t = 500 of 1000, i.e. half the chain."""
        out = pipe.interpolate(make_image(0), make_image(1), T // 2, lambdas=(0, 0.5, 1), generator=generator(0))
        assert len(out.images) == 3


def test_denoise_accepts_a_genuine_noisy_image(pipe):
    """`denoise` runs the reverse process from any x_t ~ q(x_t | x_0), whose values are not bounded by 1."""
    x_0 = make_image(0)
    x_t = pipe.scheduler.add_noise(x_0, torch.randn(x_0.shape, generator=generator(0)), torch.tensor([T - 1]))
    assert x_t.abs().max() > 1
    images = pipe.denoise(x_t, T - 1, generator=generator(1), output_type="pt").images
    assert images.shape == (1, 3, SIZE, SIZE)


SHAPE, ONE_IMAGE, RANGE, TIMESTEP, LAMBDAS = "shape", "exactly one image", r"\[-1, 1\]", "timestep", "lambdas"
BAD_FIGURE_CALLS = {
    "shared-image-of-wrong-size": (lambda p: p.shared_latent_samples(make_image(0)[:, :, :8, :8], 1), SHAPE),
    "shared-image-without-batch-dimension": (lambda p: p.shared_latent_samples(make_image(0)[0], 1), SHAPE),
    "shared-two-images": (lambda p: p.shared_latent_samples(torch.cat([make_image(0), make_image(1)]), 1), ONE_IMAGE),
    "shared-image-above-one": (lambda p: p.shared_latent_samples(make_image(0, 0.5, 1.5), 1), RANGE),
    "shared-image-below-minus-one": (lambda p: p.shared_latent_samples(make_image(0, -1.5, 0.5), 1), RANGE),
    "shared-timestep-negative": (lambda p: p.shared_latent_samples(make_image(0), -1), TIMESTEP),
    "shared-timestep-T": (lambda p: p.shared_latent_samples(make_image(0), T), TIMESTEP),
    "interpolate-image-of-wrong-size": (lambda p: p.interpolate(make_image(0)[:, :1], make_image(1), 1), SHAPE),
    "interpolate-image-above-one": (lambda p: p.interpolate(make_image(0), make_image(1, 0.5, 1.5), 1), RANGE),
    "interpolate-timestep-T": (lambda p: p.interpolate(make_image(0), make_image(1), T), TIMESTEP),
    "interpolate-timestep-negative": (lambda p: p.interpolate(make_image(0), make_image(1), -1), TIMESTEP),
    "interpolate-empty-lambdas": (lambda p: p.interpolate(make_image(0), make_image(1), 1, lambdas=()), LAMBDAS),
}


@pytest.mark.parametrize(("call", "message"), list(BAD_FIGURE_CALLS.values()), ids=list(BAD_FIGURE_CALLS))
def test_figure_methods_reject_bad_inputs_with_a_value_error(pipe, call, message):
    """Images of the wrong shape or outside [−1, 1], timesteps outside [0, T) and empty lambdas are refused."""
    with pytest.raises(ValueError, match=message):
        call(pipe)


def test_assigning_a_diffusers_scheduler_converts_it(tiny_unet):
    """`pipeline.scheduler = ...`, the diffusers way to swap schedulers, gives a ddpm_hf.DDPMScheduler too."""
    pipeline = ddpm_hf.DDPMPipeline(tiny_unet, ddpm_hf.DDPMScheduler(num_train_timesteps=20))
    pipeline.scheduler = diffusers.DDPMScheduler(num_train_timesteps=20, variance_type="fixed_large")
    assert isinstance(pipeline.scheduler, ddpm_hf.DDPMScheduler)
    assert pipeline.scheduler.config.variance_type == "fixed_large"
    assert pipeline.config.scheduler == ("diffusers", "DDPMScheduler")
    pipeline.set_progress_bar_config(disable=True)
    assert pipeline(num_inference_steps=3, output_type="np").images.shape == (1, 16, 16, 3)


# ---------------------------------------------------------------------------------------------------------------------
# Speed-ups (ddpm_hf.acceleration): the plain computation unless asked, the same images up to rounding when asked
# ---------------------------------------------------------------------------------------------------------------------


class TestSpeedups:
    def images(self, pipeline: ddpm_hf.DDPMPipeline, steps: int = T) -> np.ndarray:
        return pipeline(3, generator=generators(1, 2, 3), num_inference_steps=steps, output_type="np").images

    def test_auto_speedups_on_the_cpu_leave_the_images_bit_identical(self, pipe):
        expected = self.images(pipe)
        pipe.enable_speedups()
        np.testing.assert_array_equal(self.images(pipe), expected)

    def test_channels_last_gives_the_same_images_up_to_rounding(self, pipe):
        expected = self.images(pipe)
        pipe.enable_speedups(ddpm_hf.Speedups(channels_last=True))
        np.testing.assert_allclose(self.images(pipe), expected, rtol=0, atol=1e-5)
        assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)

    def test_bf16_draws_the_same_noise_and_stays_close_to_float32(self, pipe):
        """The UNet runs in bf16, x_t and the scheduler's arithmetic in float32, from the same generators: the images
        differ by bf16's rounding only (measured on this random network: mean |Δ| ≈ 0.0005, max ≈ 0.005 of the
        [0, 1] range over 20 steps)."""
        expected = self.images(pipe)
        pipe.enable_speedups(ddpm_hf.Speedups(bf16=True))
        difference = np.abs(self.images(pipe) - expected)
        assert 0 < difference.max() < 0.03
        assert difference.mean() < 0.003
        assert pipe.unet.dtype == torch.float32  # the weights are not converted

    def test_compile_gives_the_same_images_up_to_rounding(self, pipe):
        expected = self.images(pipe, steps=5)
        pipe.enable_speedups(ddpm_hf.Speedups(compile=True))
        np.testing.assert_allclose(self.images(pipe, steps=5), expected, rtol=0, atol=1e-5)

    def test_cuda_graphs_forced_on_the_cpu_run_the_buffered_step_and_give_the_same_images(self, pipe):
        """Off CUDA the graph is not captured; the same fixed-buffer step runs eagerly. One process is kept for the
        last batch shape and chain length."""
        expected = self.images(pipe)
        pipe.enable_speedups(ddpm_hf.Speedups(cuda_graphs=True))
        np.testing.assert_allclose(self.images(pipe), expected, rtol=0, atol=1e-5)
        graphs = pipe._acceleration.graphs
        (kept,) = graphs.values()
        np.testing.assert_allclose(self.images(pipe), expected, rtol=0, atol=1e-5)
        assert list(graphs.values()) == [kept] and kept.graph is None
        pipe(2, generator=generators(1, 2), num_inference_steps=5)
        assert len(graphs) == 1 and kept not in graphs.values()

    def test_cuda_graphs_leave_callbacks_and_learned_variances_to_the_step_loop(self, tiny_unet):
        """A per-step callback sees every x_t, and a learned σ_t needs the network's output: the plain loop runs."""
        seen = []

        def callback(pipeline, i, t, tensors):
            seen.append(t)
            return tensors

        pipeline = quiet(ddpm_hf.DDPMPipeline(tiny_unet, ddpm_hf.DDPMScheduler(num_train_timesteps=T)))
        pipeline.enable_speedups(ddpm_hf.Speedups(cuda_graphs=True))
        pipeline(1, num_inference_steps=4, callback_on_step_end=callback)
        assert len(seen) == 4 and not pipeline._acceleration.graphs
        learned = quiet(
            ddpm_hf.DDPMPipeline(
                ddpm_hf.create_unet("ddpm-tiny", out_channels=6),
                ddpm_hf.DDPMScheduler(num_train_timesteps=T, variance_type="learned_range"),
            )
        ).enable_speedups(ddpm_hf.Speedups(cuda_graphs=True))
        assert learned(1, num_inference_steps=4, output_type="np").images.shape == (1, SIZE, SIZE, 3)
        assert not learned._acceleration.graphs

    @pytest.mark.parametrize("eta", [None, 0.0, 1.0])
    def test_cuda_graphs_sample_ddim_as_the_step_loop_does(self, pipe, eta):
        """DDIM's step is graphed too (η = 0 and η > 0): forced on the CPU, the buffered step gives the step loop's
        images (which are plain `diffusers.DDPMPipeline`'s with the same DDIM scheduler, `test_samplers.py`)."""
        pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
        call = {"eta": eta} if eta is not None else {}
        expected = pipe(3, generator=generators(1, 2, 3), num_inference_steps=5, output_type="np", **call).images
        pipe.enable_speedups(ddpm_hf.Speedups(cuda_graphs=True))
        actual = pipe(3, generator=generators(1, 2, 3), num_inference_steps=5, output_type="np", **call).images
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)
        (process,) = pipe._acceleration.graphs.values()
        assert isinstance(process.scheduler, diffusers.DDIMScheduler)

    def test_a_failing_cuda_graph_is_switched_off_with_a_warning_and_the_step_loop_samples(self, pipe, monkeypatch):
        """A capture or replay that raises (here torch's index_select, which only the graphed step uses, fails as a
        capture can on a GPU) ends neither the call nor the job: one warning naming the speed-up and the error, the
        same images from the same generators (put back before the step loop draws), CUDA graphs off from then on."""
        expected = self.images(pipe)
        pipe.enable_speedups(ddpm_hf.Speedups(cuda_graphs=True))

        def failing_index_select(*args, **kwargs):
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")

        monkeypatch.setattr(torch.Tensor, "index_select", failing_index_select)
        with pytest.warns(
            RuntimeWarning,
            match=r"speed-up cuda_graphs failed \(RuntimeError: CUDA error: operation "
            r"not permitted when stream is capturing\); it is switched off and sampling goes on",
        ):
            np.testing.assert_array_equal(self.images(pipe), expected)
        assert pipe.active_speedups().cuda_graphs is False and not pipe._acceleration.graphs
        monkeypatch.undo()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(self.images(pipe), expected)  # no second warning, no second attempt

    def test_running_out_of_memory_in_the_graphed_step_is_raised_and_cuda_graphs_stay_on(self, pipe, monkeypatch):
        pipe.enable_speedups(ddpm_hf.Speedups(cuda_graphs=True))

        def out_of_memory(*args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        monkeypatch.setattr(torch.Tensor, "index_select", out_of_memory)
        with pytest.raises(torch.OutOfMemoryError):
            self.images(pipe)
        assert pipe.active_speedups().cuda_graphs is True

    def test_a_cuda_graph_giving_non_finite_samples_is_switched_off_when_the_step_loop_is_finite(
        self, pipe, monkeypatch
    ):
        expected = self.images(pipe)
        pipe.enable_speedups(ddpm_hf.Speedups(cuda_graphs=True))
        index_select = torch.Tensor.index_select
        monkeypatch.setattr(
            torch.Tensor, "index_select", lambda *args, **kwargs: index_select(*args, **kwargs) * float("nan")
        )
        with pytest.warns(RuntimeWarning, match="cuda_graphs failed \\(non-finite samples where the step loop's"):
            np.testing.assert_array_equal(self.images(pipe), expected)
        assert pipe.active_speedups().cuda_graphs is False

    @pytest.mark.parametrize("failure", ["at compile", "at the first call", "non-finite output"])
    def test_a_failing_compile_is_switched_off_with_a_warning_and_the_plain_network_samples(
        self, pipe, monkeypatch, failure
    ):
        """`torch.compile` failing when called, at the first compiled call (compilation is lazy), or giving
        non-finite output where the network's is finite: one warning, the plain network's images, compile off."""
        expected = self.images(pipe)

        def broken_compile(module, **kwargs):
            if failure == "at compile":
                raise RuntimeError("Dynamo is not supported on this Python")

            def compiled(*args, **kwargs):
                if failure == "at the first call":
                    raise RuntimeError("BackendCompilerFailed: inductor raised")
                output = module(*args, **kwargs)
                return type(output)(sample=output.sample * float("inf"))

            return compiled

        monkeypatch.setattr(torch, "compile", broken_compile)
        pipe.enable_speedups(ddpm_hf.Speedups(compile=True))
        reason = {
            "at compile": "RuntimeError: Dynamo is not supported on this Python",
            "at the first call": "RuntimeError: BackendCompilerFailed: inductor raised",
            "non-finite output": "non-finite output where the uncompiled network's is finite",
        }[failure]
        with pytest.warns(RuntimeWarning, match=f"speed-up compile failed \\({reason}\\); it is switched off"):
            np.testing.assert_array_equal(self.images(pipe), expected)
        assert pipe.active_speedups().compile is False
        np.testing.assert_array_equal(self.images(pipe), expected)

    def test_disable_speedups_returns_to_the_plain_computation(self, pipe):
        expected = self.images(pipe)
        pipe.enable_speedups(ddpm_hf.Speedups(bf16=True)).disable_speedups()
        np.testing.assert_array_equal(self.images(pipe), expected)

    def test_figures_run_with_speedups_through_the_step_loop(self, pipe):
        expected = pipe.progressive_generation(2, generator=generators(1, 2), num_inference_steps=T, output_type="np")
        pipe.enable_speedups(ddpm_hf.Speedups(channels_last=True))
        actual = pipe.progressive_generation(2, generator=generators(1, 2), num_inference_steps=T, output_type="np")
        np.testing.assert_allclose(actual.images, expected.images, rtol=0, atol=1e-5)
        assert actual.timesteps == expected.timesteps

    def test_a_pipeline_with_channels_last_weights_saves_and_loads_the_same_weights(self, pipe, tmp_path):
        pipe.enable_speedups(ddpm_hf.Speedups(channels_last=True))
        self.images(pipe, steps=2)
        pipe.save_pretrained(tmp_path / "saved")
        loaded = ddpm_hf.DDPMPipeline.from_pretrained(tmp_path / "saved")
        assert_same_state_dict(loaded.unet.state_dict(), pipe.unet.state_dict())
