"""Specification of publishing pipelines on the Hugging Face Hub and loading them from it (`ddpm_hf.hub`,
`DDPMPipeline.push_to_hub` and `from_pretrained` with a repo id, `ddpm-hf push`).

The real `huggingface_hub` client talks over HTTP to a small Hub on loopback (`hub_server.py`), started for each
test at the address `conftest.py` gave the client (`HF_ENDPOINT`), with its own storage and an empty Hub cache.

* A push uploads the pipeline exactly as `save_pretrained` wrote it, a model card that passes the Hub's metadata
  check, and the run's sample grid; nothing else of the folder, and nothing at all from a folder with pickle weights.
* What is pushed downloads into a fresh cache with identical files and weights, and loads in plain diffusers in a
  process without ddpm_hf, drawing the same images for the same seed.
* Re-pushing makes a new commit; branches, pull requests and commits pin what is loaded; a private repo is private.
* A repo or revision that does not exist is an error naming it; a warm cache loads offline and when the Hub is down.
* The token is sent in the Authorization header only: never printed, logged, put in a URL or uploaded.
* A Hub that never answers is an error within DDPM_HF_HUB_TIMEOUT seconds; a wrong, read-only or unauthorised token
  is refused before anything is uploaded; every Hub failure is one `HubError` line naming the endpoint.
* `model_index.json` may name only a UNet2DModel and a diffusers scheduler: a nested pipeline is refused.

`test_bad_input_push.py` has the table of what `ddpm-hf push` refuses.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.utils import logging as diffusers_logging
from hub_server import HubError as ServerRefusal
from hub_server import HubServer, SilentServer
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import _http as hf_http
from huggingface_hub.utils import disable_progress_bars, enable_progress_bars, set_client_factory
from safetensors.torch import save_file

import ddpm_hf
from ddpm_hf import cli
from ddpm_hf.hub import HubError, check_can_push, collect_push_contents, push_to_hub
from ddpm_hf.model_card import check_model_card
from ddpm_hf.pipeline_folder import PICKLE_SUFFIXES
from ddpm_hf.training_config import TrainingConfig

diffusers_logging.disable_progress_bar()
# huggingface_hub's own LFS upload passes a file as `data=`, which httpx deprecates: not this package's to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]

TOKEN = "hf_DDPMtestTOKEN0x5eCr3t0nEVERshown"  # alice's: distinctive, to look for wherever it must not be
BOB_TOKEN = "hf_bobTOKEN0000000000000000000000"
READ_TOKEN = "hf_aliceREADonly000000000000000000"  # alice's, without write access
REPO = "alice/ddpm-tiny"
T = 10  # diffusion steps of the test pipelines
STANDARD_LAYOUT = {
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
}


# -------------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# -------------------------------------------------------------------------------------------------------------


@pytest.fixture
def hub(tmp_path, monkeypatch) -> HubServer:
    """An empty Hub at the client's endpoint, the client online with alice's token in `HF_TOKEN` and an empty Hub
    cache. Users: alice (also in the organisation "google"; READ_TOKEN is a read-only one of hers), bob. The test
    fails if the client made a request the server does not handle, or the server failed."""
    port = urlsplit(constants.ENDPOINT).port
    tokens, read_tokens = {TOKEN: "alice", BOB_TOKEN: "bob"}, {READ_TOKEN: "alice"}
    server = HubServer(tmp_path / "hub-storage", port, tokens, {"google": {"alice"}}, read_tokens).start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    disable_progress_bars()
    yield server
    enable_progress_bars()
    server.stop()
    assert not server.unhandled, f"requests the test Hub does not handle: {server.unhandled}"
    assert not server.failures, f"the test Hub failed: {server.failures}"


def quiet(pipeline: diffusers.DiffusionPipeline) -> diffusers.DiffusionPipeline:
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def make_pipeline(seed: int) -> ddpm_hf.DDPMPipeline:
    """A ddpm-tiny pipeline over T steps, its weights drawn from `seed`."""
    torch.manual_seed(seed)
    return quiet(ddpm_hf.DDPMPipeline(ddpm_hf.create_unet("ddpm-tiny"), ddpm_hf.DDPMScheduler(num_train_timesteps=T)))


def sample(pipeline: diffusers.DiffusionPipeline, seed: int = 7) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return pipeline(batch_size=2, generator=generator, num_inference_steps=T, output_type="np").images


def assert_same_weights(a: diffusers.DiffusionPipeline, b: diffusers.DiffusionPipeline) -> None:
    expected, actual = b.unet.state_dict(), a.unet.state_dict()
    assert set(actual) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name
    scheduler_a = {k: v for k, v in a.scheduler.config.items() if not k.startswith("_")}
    assert scheduler_a == {k: v for k, v in b.scheduler.config.items() if not k.startswith("_")}


def files_of(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file()}


@pytest.fixture
def pipe() -> ddpm_hf.DDPMPipeline:
    return make_pipeline(0)


@pytest.fixture
def run_dir(pipe, tmp_path) -> Path:
    """A training output folder as `ddpm-hf train` and `ddpm-hf evaluate` leave it, with the files that must never
    be pushed: checkpoints (with an optimizer state), logs, metrics, intermediate grids, a cache and a token file."""
    run = tmp_path / "run"
    pipe.save_pretrained(run / "pipeline")
    config = TrainingConfig(unet="ddpm-tiny", num_train_timesteps=T, max_train_steps=10, output_dir=str(run))
    summary = {
        "steps": 10,
        "resumed_from_step": 0,
        "images_seen": 1280,
        "epochs": 2.5,
        "wall_time_seconds": 12.0,
        "final_loss": 0.5,
        "num_processes": 1,
        "parameters": sum(p.numel() for p in pipe.unet.parameters()),
        "dataset": {"source": "builtin:shapes", "split": "train", "column": "image", "num_images": 512},
        "pipeline": str(run / "pipeline"),
        "config": config.to_dict(),
    }
    (run / "training_summary.json").write_text(json.dumps(summary, indent=2))
    PIL.Image.new("RGB", (32, 32), (200, 30, 30)).save(run / "samples.png")
    (run / "evaluation").mkdir()
    report = {"metrics": {"fid": 250.0, "bits_per_dim": 7.5}, "sampling": {"num_samples": 64, "seed": 0}}
    (run / "evaluation" / "report.json").write_text(json.dumps(report))
    checkpoint = run / "checkpoints" / "checkpoint-0000010"
    checkpoint.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, checkpoint / "model.safetensors")
    save_file({"m": torch.zeros(2)}, checkpoint / "optimizer.safetensors")
    (checkpoint / "state.json").write_text("{}")
    (run / "logs").mkdir()
    (run / "logs" / "events.out.tfevents.1").write_bytes(b"\0log")
    (run / "metrics.jsonl").write_text('{"step": 10, "loss": 0.5}\n')
    (run / "samples").mkdir()
    PIL.Image.new("RGB", (32, 32)).save(run / "samples" / "step-0000010.png")
    (run / ".cache" / "huggingface").mkdir(parents=True)
    (run / ".cache" / "huggingface" / "download.lock").write_text("")
    (run / "hf_token").write_text(TOKEN)  # a stray token file
    return run


def replace_weights(run: Path, seed: int) -> ddpm_hf.DDPMPipeline:
    """Save a pipeline with other weights over the one in `run` (as a second training run would)."""
    pipeline = make_pipeline(seed)
    pipeline.save_pretrained(run / "pipeline")
    return pipeline


def run_python(script: str, *arguments: str, env: dict[str, str], cwd: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        env={**env, "OMP_NUM_THREADS": "1"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


# -------------------------------------------------------------------------------------------------------------
# 1. What goes up
# -------------------------------------------------------------------------------------------------------------


def test_the_test_hub_refuses_writes_without_a_valid_token(hub):
    """The server checks the Authorization header of writes, as the Hub does: 401 without a token or with a wrong
    one, 403 in someone else's namespace."""
    api = HfApi()
    for token, status in ((False, 401), ("hf_not_a_valid_token", 401), (BOB_TOKEN, 403)):
        with pytest.raises(HfHubHTTPError) as refused:
            api.create_repo(REPO, token=token)
        assert refused.value.response.status_code == status
    assert hub.repository(REPO) is None


def test_a_push_uploads_the_pipeline_the_card_and_the_sample_grid_and_nothing_else(hub, run_dir):
    """Exactly the saved pipeline (byte for byte), README.md and samples.png go up, in one commit; weights and image
    through LFS, configurations inline; the card passed the Hub's metadata check."""
    commit = push_to_hub(run_dir, REPO)

    files = hub.files(REPO)
    assert set(files) == {".gitattributes", "README.md", "samples.png", *STANDARD_LAYOUT}
    for name in STANDARD_LAYOUT:
        assert files[name] == (run_dir / "pipeline" / name).read_bytes(), name
    assert files["samples.png"] == (run_dir / "samples.png").read_bytes()
    tree = hub.tree(REPO)
    assert tree["unet/diffusion_pytorch_model.safetensors"]["lfs"] and tree["samples.png"]["lfs"]
    assert not tree["model_index.json"]["lfs"] and not tree["README.md"]["lfs"]

    readme = files["README.md"].decode()
    assert hub.validated_readmes == [readme]
    card = check_model_card(readme)
    assert card.data.library_name == "diffusers" and "diffusers:DDPMPipeline" in card.data.tags
    assert [r.metric_type for r in card.data.eval_results] == ["fid", "bits_per_dim"]  # evaluation/report.json
    assert "![Samples drawn from this pipeline](samples.png)" in readme
    assert f'DDPMPipeline.from_pretrained("{REPO}")' in readme and f"num_inference_steps={T}" in readme
    assert str(run_dir) not in readme

    assert commit.oid == hub.head(REPO)
    assert commit == f"{hub.url}/{REPO}/commit/{commit.oid}"
    assert hub.repository(REPO).commit(commit.oid)["summary"] == "Upload DDPM pipeline with ddpm-hf"


TRAIN_TINY = [
    "--unet", "ddpm-tiny", "--train-batch-size", "4", "--max-train-steps", "2", "--num-train-timesteps", "10",
    "--logging-steps", "1", "--num-sample-images", "2", "--report-to", "none",
]  # fmt: skip


def train(output: Path, *arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m ddpm_hf.train` of a tiny model, in a process with its own environment."""
    return subprocess.run(
        [sys.executable, "-m", "ddpm_hf.train", *TRAIN_TINY, "--output-dir", str(output), *arguments],
        env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_train_push_to_hub_publishes_the_trained_pipeline_when_training_ends(hub, tmp_path):
    """`ddpm-hf train --push-to-hub --hub-repo-id ...` pushes the EMA pipeline, its card and its sample grid."""
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "home")}
    result = train(tmp_path / "run", "--push-to-hub", "--hub-repo-id", "alice/trained", env=env)
    assert result.returncode == 0, result.stderr
    files = hub.files("alice/trained")
    assert set(files) == {".gitattributes", "README.md", "samples.png", *STANDARD_LAYOUT}
    for name in STANDARD_LAYOUT:
        assert files[name] == (tmp_path / "run" / "pipeline" / name).read_bytes(), name
    assert "Pushed the pipeline to the Hub" in result.stdout and TOKEN not in result.stdout + result.stderr


def test_train_push_to_hub_without_a_usable_token_or_repo_id_fails_before_training(hub, tmp_path):
    """No token, a token the Hub refuses, a read-only one, no repo id or an invalid one: `--push-to-hub` fails at
    once, before the first step, with one line that never shows the token."""
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env.update(HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "home"))
    for token, arguments, message in (
        (None, ["--push-to-hub", "--hub-repo-id", "alice/trained"], "No Hugging Face token"),
        ("hf_wrong", ["--push-to-hub", "--hub-repo-id", "alice/trained"], "refused the Hugging Face token in HF_TOKEN"),
        (READ_TOKEN, ["--push-to-hub", "--hub-repo-id", "alice/trained"], "is read-only"),
        (TOKEN, ["--push-to-hub"], "hub_repo_id"),
        (TOKEN, ["--push-to-hub", "--hub-repo-id", "not a repo"], "Repo id"),
    ):
        result = train(tmp_path / "run", *arguments, env=env if token is None else {**env, "HF_TOKEN": token})
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
        assert (token or "no token") not in result.stdout + result.stderr
        assert not (tmp_path / "run" / "checkpoints").exists()
    assert hub.repository("alice/trained") is None


def test_push_contents_of_a_saved_pipeline_folder_are_its_files_only(pipe, tmp_path):
    """A folder written by save_pretrained (no training run around it) pushes its four files and nothing else."""
    pipe.save_pretrained(tmp_path / "saved")
    (tmp_path / "saved" / "notes.txt").write_text("not part of the pipeline")
    contents = collect_push_contents(tmp_path / "saved")
    assert set(contents.files) == STANDARD_LAYOUT
    assert contents.training_summary is None and contents.sample_image is None
    assert contents.repo_files == sorted([*STANDARD_LAYOUT, "README.md"])


@pytest.mark.parametrize("suffix", [".bin", ".pt"])
def test_a_folder_with_pickle_weights_is_refused_before_any_request(hub, run_dir, tiny_unet, suffix):
    """A pickle file in the pipeline, even beside safetensors weights, stops the push before anything is sent."""
    assert suffix in PICKLE_SUFFIXES
    torch.save(tiny_unet.state_dict(), run_dir / "pipeline" / "unet" / f"diffusion_pytorch_model{suffix}")
    with pytest.raises(ValueError, match=rf"diffusion_pytorch_model\{suffix} is a pickle file"):
        push_to_hub(run_dir, REPO)
    assert hub.requests == [] and hub.repository(REPO) is None


def test_pipeline_push_to_hub_saves_and_pushes_with_a_card_from_the_configuration(hub, pipe):
    """`DDPMPipeline.push_to_hub("name")` creates the repo under the token's user, uploads the standard layout and
    a valid card (no training summary needed), and the repo loads back with the same weights."""
    url = pipe.push_to_hub("ddpm-tiny")
    assert url.startswith(f"{hub.url}/{REPO}/commit/")
    files = hub.files(REPO)
    assert set(files) == {".gitattributes", "README.md", *STANDARD_LAYOUT}
    readme = files["README.md"].decode()
    check_model_card(readme)
    assert f'from_pretrained("{REPO}")' in readme and "without a training summary" in readme
    assert_same_weights(ddpm_hf.DDPMPipeline.from_pretrained(REPO), pipe)
    with pytest.raises(ValueError, match="safetensors only"):
        pipe.push_to_hub(REPO, safe_serialization=False)


# -------------------------------------------------------------------------------------------------------------
# 2. Downloads
# -------------------------------------------------------------------------------------------------------------


def test_a_pushed_pipeline_downloads_into_a_fresh_cache_with_identical_weights(hub, run_dir, pipe, tmp_path):
    """from_pretrained(repo id) fetches the configurations and safetensors weights only (byte-identical), and the
    loaded pipeline has the pushed weights and scheduler and draws the same images."""
    push_to_hub(run_dir, REPO)
    loaded = quiet(ddpm_hf.DDPMPipeline.from_pretrained(REPO, cache_dir=tmp_path / "fresh-cache"))
    assert_same_weights(loaded, pipe)
    np.testing.assert_array_equal(sample(loaded), sample(pipe))

    (snapshot,) = (tmp_path / "fresh-cache" / "models--alice--ddpm-tiny" / "snapshots").iterdir()
    assert files_of(snapshot) == STANDARD_LAYOUT  # no README, image or .gitattributes
    for name in STANDARD_LAYOUT:
        assert (snapshot / name).read_bytes() == (run_dir / "pipeline" / name).read_bytes()


PLAIN_DIFFUSERS = r"""
import sys


class NoDdpmHf:
    # `import ddpm_hf` fails in this interpreter: the repo must load with diffusers alone.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ddpm_hf":
            raise ModuleNotFoundError("No module named 'ddpm_hf'", name=name)
        return None


sys.meta_path.insert(0, NoDdpmHf())

import diffusers
import numpy as np
import torch

repo_id, steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
pipe = diffusers.DDPMPipeline.from_pretrained(repo_id)
assert type(pipe.unet) is diffusers.UNet2DModel and type(pipe.scheduler) is diffusers.DDPMScheduler
pipe.set_progress_bar_config(disable=True)
generator = torch.Generator().manual_seed(7)
np.save(out, pipe(batch_size=2, generator=generator, num_inference_steps=steps, output_type="np").images)
assert "ddpm_hf" not in sys.modules
"""


def test_the_pushed_repo_loads_in_plain_diffusers_without_ddpm_hf_and_gives_the_same_images(
    hub, run_dir, pipe, tmp_path
):
    """In a process that cannot import ddpm_hf, with no token and an empty cache,
    `diffusers.DDPMPipeline.from_pretrained(repo id)` loads the pushed repo and samples ddpm_hf's images."""
    push_to_hub(run_dir, REPO)
    pushed = len(hub.requests)
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env |= {"HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "diffusers-cache")}
    run_python(PLAIN_DIFFUSERS, REPO, str(T), str(tmp_path / "theirs.npy"), env=env, cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "theirs.npy"), sample(pipe), rtol=0, atol=1e-6)
    downloads = [r for r in hub.requests[pushed:] if r.path.startswith(f"/{REPO}/resolve/") and r.method == "GET"]
    assert downloads and all(r.authorization is None for r in hub.requests[pushed:])  # anonymous, from this Hub


OFFLINE = r"""
import sys

import diffusers
import huggingface_hub.constants
import numpy as np
import torch

import ddpm_hf

assert huggingface_hub.constants.HF_HUB_OFFLINE
repo_id, steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
images = []
for cls in (ddpm_hf.DDPMPipeline, diffusers.DDPMPipeline):
    pipe = cls.from_pretrained(repo_id)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(7)
    images.append(pipe(batch_size=2, generator=generator, num_inference_steps=steps, output_type="np").images)
np.save(out, np.stack(images))
"""


def test_a_warm_cache_loads_offline_in_a_fresh_process(hub, run_dir, pipe, tmp_path):
    """After one download, a process with HF_HUB_OFFLINE=1 loads the repo from the cache, with ddpm_hf and with
    plain diffusers, without a single request to the Hub."""
    push_to_hub(run_dir, REPO)
    ddpm_hf.DDPMPipeline.from_pretrained(REPO)  # warms the cache
    requests = len(hub.requests)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": constants.HF_HUB_CACHE}
    run_python(OFFLINE, REPO, str(T), str(tmp_path / "offline.npy"), env=env, cwd=tmp_path)
    ours, theirs = np.load(tmp_path / "offline.npy")
    np.testing.assert_array_equal(ours, sample(pipe))
    np.testing.assert_allclose(theirs, sample(pipe), rtol=0, atol=1e-6)
    assert len(hub.requests) == requests


def test_a_downloaded_pipeline_still_loads_when_the_hub_is_down(hub, run_dir, pipe):
    """With the server gone (connections refused), a downloaded repo loads from the cache; one never downloaded is
    an error that says it is not in the cache."""
    push_to_hub(run_dir, REPO)
    ddpm_hf.DDPMPipeline.from_pretrained(REPO)
    hub.stop()
    assert_same_weights(ddpm_hf.DDPMPipeline.from_pretrained(REPO), pipe)
    with pytest.raises(LocalEntryNotFoundError, match="'alice/never-downloaded' is not in the Hub cache"):
        ddpm_hf.DDPMPipeline.from_pretrained("alice/never-downloaded")


def test_a_repo_that_does_not_exist_is_an_error_naming_it(hub):
    """A HubError on one line, and huggingface_hub's RepositoryNotFoundError too, for code that catches that."""
    with pytest.raises(RepositoryNotFoundError, match="Model repo 'alice/no-such-model' not found on http://127") as e:
        ddpm_hf.DDPMPipeline.from_pretrained("alice/no-such-model")
    assert isinstance(e.value, HubError) and "\n" not in str(e.value) and e.value.response.status_code == 404


def test_a_revision_that_does_not_exist_is_an_error_naming_it(hub, run_dir):
    push_to_hub(run_dir, REPO)
    with pytest.raises(RevisionNotFoundError, match=f"Revision 'no-such-branch' not found in model repo '{REPO}'") as e:
        ddpm_hf.DDPMPipeline.from_pretrained(REPO, revision="no-such-branch")
    assert isinstance(e.value, HubError) and "\n" not in str(e.value)


def test_a_string_that_is_neither_a_folder_nor_a_repo_id_is_a_file_not_found_error(hub, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a Hub repo id"):
        ddpm_hf.DDPMPipeline.from_pretrained(str(tmp_path / "missing" / "pipeline"))
    assert hub.requests == []


# -------------------------------------------------------------------------------------------------------------
# 3. Versions: re-push, branches, pull requests, commits
# -------------------------------------------------------------------------------------------------------------


def test_a_second_push_to_the_same_repo_commits_the_new_weights_and_keeps_the_first_commit(hub, run_dir, pipe):
    """Re-pushing to an existing repo makes a new commit on main (only changed files are uploaded again); the
    first commit stays loadable by its id."""
    first = push_to_hub(run_dir, REPO)
    uploads = len(hub.lfs_uploads)
    second_pipe = replace_weights(run_dir, seed=1)
    second = push_to_hub(run_dir, REPO, commit_message="Second run")

    assert second.oid != first.oid and hub.head(REPO) == second.oid
    assert hub.repository(REPO).commit(second.oid)["summary"] == "Second run"
    assert len(hub.lfs_uploads) == uploads + 1  # the new weights; samples.png is unchanged
    assert_same_weights(ddpm_hf.DDPMPipeline.from_pretrained(REPO), second_pipe)
    assert_same_weights(ddpm_hf.DDPMPipeline.from_pretrained(REPO, revision=first.oid), pipe)


def test_a_push_to_a_branch_creates_it_and_leaves_main_alone(hub, run_dir, pipe):
    """`revision="experiment"` creates the branch and commits there; loading pins main or the branch."""
    main = push_to_hub(run_dir, REPO)
    branch_pipe = replace_weights(run_dir, seed=2)
    on_branch = push_to_hub(run_dir, REPO, revision="experiment")
    again = push_to_hub(run_dir, REPO, revision="experiment", commit_message="Same branch again")  # exists now

    assert hub.head(REPO, "main") == main.oid
    assert hub.head(REPO, "experiment") == on_branch.oid == again.oid  # nothing changed: no empty commit
    assert_same_weights(ddpm_hf.DDPMPipeline.from_pretrained(REPO), pipe)
    assert_same_weights(ddpm_hf.DDPMPipeline.from_pretrained(REPO, revision="experiment"), branch_pipe)


def test_create_pr_opens_a_pull_request_that_loads_by_its_ref(hub, run_dir, pipe):
    main = push_to_hub(run_dir, REPO)
    proposed = replace_weights(run_dir, seed=3)
    pr = push_to_hub(run_dir, REPO, create_pr=True)
    assert pr.pr_revision == "refs/pr/1" and hub.head(REPO) == main.oid
    assert_same_weights(ddpm_hf.DDPMPipeline.from_pretrained(REPO, revision="refs/pr/1"), proposed)


def test_a_private_push_creates_a_private_repo_that_only_its_owner_can_see(hub, run_dir, pipe, tmp_path):
    push_to_hub(run_dir, REPO, private=True)
    assert hub.repository(REPO).settings["private"] is True
    assert HfApi().model_info(REPO).private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info(REPO, token=BOB_TOKEN)
    with pytest.raises(RepositoryNotFoundError, match=f"Model repo '{REPO}' not found"):
        ddpm_hf.DDPMPipeline.from_pretrained(REPO, token=False, cache_dir=tmp_path / "anonymous")
    assert_same_weights(ddpm_hf.DDPMPipeline.from_pretrained(REPO), pipe)


def test_the_private_flag_does_not_change_an_existing_repo_and_a_warning_says_so(hub, run_dir):
    push_to_hub(run_dir, REPO)
    replace_weights(run_dir, seed=4)
    with pytest.warns(UserWarning, match="is public; its visibility was not changed"):
        push_to_hub(run_dir, REPO, private=True)
    assert HfApi().model_info(REPO).private is False


# -------------------------------------------------------------------------------------------------------------
# 4. Repos made by others: the flat google/ddpm-* layout, pickle weights
# -------------------------------------------------------------------------------------------------------------

LEGACY_ATTENTION_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def legacy_name(key: str) -> str:
    match = re.fullmatch(r"(.*\.attentions\.\d+)\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)", key)
    return f"{match[1]}.{LEGACY_ATTENTION_NAMES[match[2]]}.{match[3]}" if match else key


def flat_folder(pipe: ddpm_hf.DDPMPipeline, folder: Path, safetensors: bool = True, pickle: bool = False) -> Path:
    """`pipe` in the flat layout of `google/ddpm-cifar10-32` (legacy attention names), as the original conversion
    uploaded it: safetensors and/or pickle weights."""
    folder.mkdir()
    weights = {legacy_name(key): tensor.contiguous() for key, tensor in pipe.unet.state_dict().items()}
    if safetensors:
        save_file(weights, folder / "diffusion_pytorch_model.safetensors")
    if pickle:
        torch.save(weights, folder / "diffusion_pytorch_model.bin")
    config = {"_class_name": "UNet2DModel", "_diffusers_version": "0.0.4", **ddpm_hf.unet_config("ddpm-tiny")}
    (folder / "config.json").write_text(json.dumps(config))
    scheduler = {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}
    (folder / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler", **scheduler}))
    index = {
        "_class_name": "DDPMPipeline",
        "scheduler": ["diffusers", "DDPMScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def test_the_flat_layout_of_the_google_repos_loads_from_the_hub_without_its_pickle_file(hub, pipe, tmp_path):
    """A repo in the google/ddpm-* flat layout with both weight formats loads with ddpm_hf; only the safetensors
    weights are downloaded."""
    api = HfApi()
    api.create_repo("google/ddpm-tiny-16")
    api.upload_folder(folder_path=flat_folder(pipe, tmp_path / "flat", pickle=True), repo_id="google/ddpm-tiny-16")
    loaded = ddpm_hf.DDPMPipeline.from_pretrained("google/ddpm-tiny-16", cache_dir=tmp_path / "cache")
    assert_same_weights(loaded, pipe)
    (snapshot,) = (tmp_path / "cache" / "models--google--ddpm-tiny-16" / "snapshots").iterdir()
    assert "diffusion_pytorch_model.bin" not in files_of(snapshot)


def test_a_repo_with_pickle_weights_only_is_refused_unless_allowed(hub, pipe, tmp_path):
    api = HfApi()
    api.create_repo("google/ddpm-pickle")
    folder = flat_folder(pipe, tmp_path / "flat", safetensors=False, pickle=True)
    api.upload_folder(folder_path=folder, repo_id="google/ddpm-pickle")
    with pytest.raises(
        ValueError, match=r"pickle weights only \(diffusion_pytorch_model\.bin\).*allow_pickle=True \(--allow-pickle"
    ):
        ddpm_hf.DDPMPipeline.from_pretrained("google/ddpm-pickle")
    assert_same_weights(ddpm_hf.DDPMPipeline.from_pretrained("google/ddpm-pickle", allow_pickle=True), pipe)


def test_a_repo_without_a_pipeline_is_an_error_naming_the_repo_and_the_missing_file(hub, tmp_path):
    api = HfApi()
    api.create_repo("alice/just-a-readme")
    api.upload_file(path_or_fileobj=b"# Nothing here\n", path_in_repo="README.md", repo_id="alice/just-a-readme")
    with pytest.raises(FileNotFoundError, match="Model repo 'alice/just-a-readme' .* it has no model_index.json"):
        ddpm_hf.DDPMPipeline.from_pretrained("alice/just-a-readme")


# -------------------------------------------------------------------------------------------------------------
# 5. ddpm-hf push and the token
# -------------------------------------------------------------------------------------------------------------


def test_the_token_is_never_printed_logged_put_in_a_url_or_uploaded(hub, run_dir, capfd, caplog):
    """`ddpm-hf push` with the token in HF_TOKEN: the token goes in the Authorization header of the requests and
    nowhere else (not in stdout, stderr, log records, URLs or any file the Hub stored)."""
    caplog.set_level(logging.DEBUG)
    assert cli.main(["push", str(run_dir), "--repo-id", REPO, "--commit-message", "From the CLI"]) == 0
    out, err = capfd.readouterr()
    announced, pushed = out.splitlines()
    assert re.fullmatch(rf"Pushing 6 files \(\d+\.\d kB\) to {hub.url}/{REPO}, main", announced)
    assert pushed.startswith(f"Pushed {run_dir} to {hub.url}/{REPO}: {hub.url}/{REPO}/commit/")
    assert TOKEN not in out + err and TOKEN not in caplog.text
    writes = [r for r in hub.requests if r.method in ("POST", "PUT") and not r.path.startswith("/lfs-upload/")]
    assert writes and all(r.authorization == f"Bearer {TOKEN}" for r in writes)
    assert not any(TOKEN in r.path for r in hub.requests)
    stored = hub.stored_bytes()
    assert stored and not [path for path, content in stored if TOKEN.encode() in content]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing folder", "does not exist or is not a folder"),
        ("pickle weights", "is a pickle file"),
        ("invalid repo id", "Repo id must"),
        ("someone else's namespace", "403"),
        ("no token", "No Hugging Face token found"),
    ],
)
def test_push_command_reports_user_errors_on_one_line_with_status_1(
    hub, run_dir, tiny_unet, capfd, monkeypatch, case, message
):
    folder, repo_id = run_dir, REPO
    if case == "missing folder":
        folder = run_dir / "no-such-folder"
    elif case == "pickle weights":
        torch.save(tiny_unet.state_dict(), run_dir / "pipeline" / "unet" / "diffusion_pytorch_model.bin")
    elif case == "invalid repo id":
        repo_id = "alice/not a valid id"
    elif case == "someone else's namespace":
        repo_id = "bob/ddpm-tiny"
    elif case == "no token":
        monkeypatch.delenv("HF_TOKEN")
    assert cli.main(["push", str(folder), "--repo-id", repo_id]) == 1
    out, err = capfd.readouterr()
    assert out == ""
    assert err.startswith("ddpm-hf push: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err and TOKEN not in err
    assert not [r for r in hub.requests if "/commit/" in r.path]  # nothing was committed


# -------------------------------------------------------------------------------------------------------------
# 6. Safety: time limits, the right to write, what a pipeline may name, one error type
# -------------------------------------------------------------------------------------------------------------


@pytest.fixture
def silent_hub(tmp_path, monkeypatch) -> SilentServer:
    """A Hub at the client's endpoint that accepts connections and never answers, with a one-second time limit."""
    server = SilentServer(urlsplit(constants.ENDPOINT).port).start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("DDPM_HF_HUB_TIMEOUT", "1")
    yield server
    server.stop()


def test_a_push_to_a_hub_that_never_answers_fails_within_the_time_limit(silent_hub, run_dir, capsys):
    """`ddpm-hf push` to a Hub that accepts the connection and never answers stops after DDPM_HF_HUB_TIMEOUT
    seconds with one line naming the endpoint and the limit, and says the folder is unchanged."""
    started = time.monotonic()
    assert cli.main(["push", str(run_dir), "--repo-id", REPO]) == 1
    assert time.monotonic() - started < 10
    assert silent_hub.connections  # the Hub was asked
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and TOKEN not in err
    assert f"the Hub at {constants.ENDPOINT} did not answer within 1 s (DDPM_HF_HUB_TIMEOUT" in err
    assert f"Nothing was lost: {run_dir} is unchanged." in err


def test_a_download_from_a_hub_that_never_answers_fails_within_the_time_limit(silent_hub):
    """from_pretrained(repo id) against a Hub that never answers: a HubError (and LocalEntryNotFoundError) within
    the time limit, naming the repo, the endpoint and the limit."""
    started = time.monotonic()
    with pytest.raises(LocalEntryNotFoundError, match="'alice/ddpm-tiny' is not in the Hub cache") as error:
        ddpm_hf.DDPMPipeline.from_pretrained(REPO)
    assert time.monotonic() - started < 10
    assert isinstance(error.value, HubError) and "\n" not in str(error.value)
    assert f"the Hub at {constants.ENDPOINT} did not answer within 1 s" in str(error.value)


def test_the_time_limit_holds_for_ddpm_hf_calls_only_and_keeps_the_users_client_factory(hub, run_dir):
    """The limit is added to the clients huggingface_hub makes during a push or a download; the client factory the
    user set is used for them and is back in place afterwards, after a failure too."""
    made = []

    def factory():
        made.append(hf_http.default_client_factory())
        return made[-1]

    set_client_factory(factory)
    try:
        push_to_hub(run_dir, REPO)
        with pytest.raises(RepositoryNotFoundError):
            ddpm_hf.DDPMPipeline.from_pretrained("alice/no-such-model")
        assert hf_http._GLOBAL_CLIENT_FACTORY is factory
        assert made and all(len(client.event_hooks["request"]) == 2 for client in made)  # huggingface_hub's + ours
    finally:
        set_client_factory(hf_http.default_client_factory)


def test_a_wrong_token_is_refused_before_anything_is_created(hub):
    with pytest.raises(HubError, match=r"refused the Hugging Face token passed as token=: it is invalid") as error:
        check_can_push(REPO, token="hf_not_a_valid_token")
    assert "hf_not_a_valid_token" not in str(error.value) and "/settings/tokens" in str(error.value)
    assert hub.repository(REPO) is None


def test_a_read_only_token_is_refused_before_anything_is_created(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    with pytest.raises(HubError, match=r"token in HF_TOKEN \(user 'alice'\) is read-only: create a token with write"):
        check_can_push(REPO)
    assert hub.repository(REPO) is None


def test_a_namespace_without_the_right_to_write_is_refused_whether_the_repo_exists_or_not(hub):
    """A new repo in someone else's namespace (the Hub refuses to create it) and an existing public repo of
    someone else (the Hub's write check) are refused at once, saying whose token it is and where it may push."""
    check_can_push(REPO)  # alice's repo, public
    for token, repo_id, user in ((TOKEN, "bob/ddpm-tiny", "alice"), (BOB_TOKEN, REPO, "bob")):
        expected = rf"User '{user}' may not write to {repo_id} on http.*\(403 Forbidden: .*\): push to a namespace you"
        with pytest.raises(HubError, match=expected + rf" can write to \(such as {user}/ddpm-tiny\)"):
            check_can_push(repo_id, token=token)
    assert hub.repository("bob/ddpm-tiny") is None


def test_check_can_push_creates_the_repo_and_returns_its_full_id(hub):
    assert check_can_push("ddpm-tiny", private=True) == REPO
    assert hub.repository(REPO).settings["private"] is True
    assert check_can_push(REPO) == REPO  # an existing repo of one's own


def test_a_push_the_hub_refuses_is_one_line_with_the_status_the_repo_and_what_it_said(hub, run_dir, capsys):
    hub.refusals["commit"] = ServerRefusal(413, "The commit exceeds this Hub's storage quota.")
    assert cli.main(["push", str(run_dir), "--repo-id", REPO]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("Pushing 6 files (")  # said before the upload
    assert err == (
        f"ddpm-hf push: error: Uploading to {REPO} failed: the Hub at {hub.url} answered 413 Request Entity Too "
        f"Large: The commit exceeds this Hub's storage quota. Nothing was lost: {run_dir} is unchanged.\n"
    )


def test_a_pull_request_against_a_branch_that_does_not_exist_says_how_to_create_it(hub, run_dir):
    push_to_hub(run_dir, REPO)
    with pytest.raises(HubError, match=r"has no branch or pull request 'experiment': create_pr \(--create-pr\) needs"):
        push_to_hub(run_dir, REPO, revision="experiment", create_pr=True)


def test_a_repo_whose_unet_is_a_nested_pipeline_is_refused(hub, pipe, tmp_path):
    """A repo whose model_index.json names a pipeline as the unet (whose own files would load unchecked) is refused
    on download, naming the file and the component; plain diffusers' nested loading never runs."""
    folder = tmp_path / "nested"
    pipe.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "unet": ["diffusers", "DDPMPipeline"]}))
    api = HfApi()
    api.create_repo("alice/nested")
    api.upload_folder(folder_path=folder, repo_id="alice/nested")
    with pytest.raises(ValueError, match=r'model_index.json: component .unet. is \["diffusers", "DDPMPipeline"\]'):
        ddpm_hf.DDPMPipeline.from_pretrained("alice/nested")


def test_a_bad_time_limit_is_refused_before_any_request(hub, run_dir, monkeypatch):
    for value in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv("DDPM_HF_HUB_TIMEOUT", value)
        with pytest.raises(
            ValueError, match=rf"DDPM_HF_HUB_TIMEOUT must be a positive number of seconds, got '{value}'"
        ):
            push_to_hub(run_dir, REPO)
        with pytest.raises(ValueError, match="DDPM_HF_HUB_TIMEOUT"):
            ddpm_hf.DDPMPipeline.from_pretrained(REPO)
    assert hub.requests == []
