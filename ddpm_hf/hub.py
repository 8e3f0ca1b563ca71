"""Where pipelines are stored: checks of saved pipeline folders, pushing them to the Hugging Face Hub, downloading
them from it.

A pipeline folder is diffusers' layout (`model_index.json`, `unet/`, `scheduler/`) or the flat layout of the
`google/ddpm-*` repos (`model_index.json`, `config.json`, weights and `scheduler_config.json` at the root). Weights are
accepted as safetensors; pickle files (`.bin`, `.pt`, `.ckpt`) only when the caller explicitly allows them, since
loading a pickle can run arbitrary code.

Pushing (`push_to_hub`, `ddpm-hf push`) uploads the pipeline exactly as `save_pretrained` wrote it, a model card
`README.md` (see `ddpm_hf.model_card`) and the run's sample grid `samples.png` when there is one. Only those files
go up: never checkpoints, optimizer states, logs, caches or any other file of the folder, and nothing at all from a
folder that holds pickle weights. The token comes from where `huggingface_hub` looks for it (`HF_TOKEN`, `hf auth
login`) or from the caller; it is sent to the Hub only, never printed, logged or written.

    ddpm-hf push OUTPUT_DIR --repo-id user/name [--private] [--revision BRANCH] [--commit-message MESSAGE]

Downloading (`download_pipeline`, used by `DDPMPipeline.from_pretrained` for repo ids) goes through the Hub cache
(`HF_HUB_CACHE`), skips pickle files unless they are allowed, works offline from a warm cache (`HF_HUB_OFFLINE=1` or
`local_files_only=True`), and names the repo or revision that does not exist.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, constants, get_token, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    LocalTokenNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError, safe_open

from .model_card import DEFAULT_LICENSE, check_model_card, model_card

__all__ = [
    "check_can_push",
    "check_pipeline_folder",
    "pipeline_files",
    "PushContents",
    "collect_push_contents",
    "push_to_hub",
    "download_pipeline",
    "main",
    "PICKLE_SUFFIXES",
    "DEFAULT_COMMIT_MESSAGE",
]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
DEFAULT_COMMIT_MESSAGE = "Upload DDPM pipeline with ddpm-hf"
SAMPLE_IMAGE = "samples.png"  # the sample grid of a training run, uploaded under this name
_MODEL_WEIGHTS_PREFIX = "diffusion_pytorch_model"
# What a download fetches: configurations and safetensors weights (README, images and pickles stay on the Hub).
_DOWNLOAD_PATTERNS = ("*.json", "*.safetensors")


# -------------------------------------------------------------------------------------------------------------
# Pipeline folders
# -------------------------------------------------------------------------------------------------------------


def _component_folder(root: Path, name: str) -> Path:
    """The folder of component `name`: its subfolder, or the root in the flat layout."""
    return root / name if (root / name).is_dir() else root


def _components(index: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """The (name, is_scheduler) of each component of a `model_index.json`."""
    return [
        (name, entry[1].endswith("Scheduler"))
        for name, entry in index.items()
        if not name.startswith("_") and isinstance(entry, list) and len(entry) == 2 and entry[0] is not None
    ]


def _read_index(root: Path) -> dict[str, Any]:
    index = _read_json(root / "model_index.json")
    if index is None:
        raise FileNotFoundError(f"{root} is not a saved pipeline: it has no model_index.json.")
    return index


def _check_model_weights(folder: Path, allow_pickle: bool) -> None:
    safetensors_files = sorted(folder.glob(f"{_MODEL_WEIGHTS_PREFIX}*.safetensors"))
    pickle_files = sorted(p for p in folder.glob(f"{_MODEL_WEIGHTS_PREFIX}*") if p.suffix in PICKLE_SUFFIXES)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"Missing model config {folder / 'config.json'}.")
    if not safetensors_files:
        if pickle_files and not allow_pickle:
            raise ValueError(
                f"{pickle_files[0]} is a pickle weights file and there is no safetensors file beside it. Loading a "
                "pickle can run arbitrary code: pass allow_pickle=True only if you trust this file."
            )
        if not pickle_files:
            raise FileNotFoundError(f"Missing weights file {folder / (_MODEL_WEIGHTS_PREFIX + '.safetensors')}.")
    for path in safetensors_files:
        try:
            with safe_open(str(path), framework="pt") as weights:
                weights.keys()
        except SafetensorError as error:
            raise ValueError(f"Corrupt weights file {path}: {error}.") from error


def check_pipeline_folder(root: Path, allow_pickle: bool = False) -> None:
    """Check that `root` holds a loadable pipeline before loading it.

    Raises:
        FileNotFoundError: no `model_index.json`, or a component's config or weights are missing (the message names
            the file).
        ValueError: an unreadable `model_index.json`, a corrupt safetensors file, or pickle weights without
            `allow_pickle=True` (named).
    """
    for name, is_scheduler in _components(_read_index(root)):
        folder = _component_folder(root, name)
        if is_scheduler:
            if not (folder / "scheduler_config.json").is_file():
                raise FileNotFoundError(f"Missing scheduler config {folder / 'scheduler_config.json'}.")
        else:
            _check_model_weights(folder, allow_pickle)


def pipeline_files(root: Path) -> list[str]:
    """The files of the pipeline saved in `root` that make it loadable, as `/`-separated paths relative to `root`:
    `model_index.json` and, for each component, its configuration and safetensors weights (with the index of
    sharded weights), in the component's subfolder or, in the flat layout, at the root. Nothing else."""
    files = {"model_index.json"}
    for name, is_scheduler in _components(_read_index(root)):
        folder = _component_folder(root, name)
        prefix = "" if folder == root else f"{name}/"
        if is_scheduler:
            files.add(prefix + "scheduler_config.json")
            continue
        files.add(prefix + "config.json")
        for pattern in (f"{_MODEL_WEIGHTS_PREFIX}*.safetensors", f"{_MODEL_WEIGHTS_PREFIX}*.safetensors.index.json"):
            files.update(prefix + path.name for path in folder.glob(pattern) if path.is_file())
    return sorted(files)


def _pipeline_configs(root: Path) -> tuple[dict[str, Any], dict[str, Any], int | None]:
    """(UNet config, scheduler config, UNet parameter count or None) of the pipeline in `root`."""
    unet_config: dict[str, Any] = {}
    scheduler_config: dict[str, Any] = {}
    parameters = None
    for name, is_scheduler in _components(_read_index(root)):
        folder = _component_folder(root, name)
        if is_scheduler:
            scheduler_config = json.loads((folder / "scheduler_config.json").read_text())
        elif not unet_config:
            unet_config = json.loads((folder / "config.json").read_text())
            weights = folder / f"{_MODEL_WEIGHTS_PREFIX}.safetensors"
            if weights.is_file():
                with safe_open(str(weights), framework="numpy") as tensors:
                    parameters = sum(_product(tensors.get_slice(key).get_shape()) for key in tensors.keys())
    return unet_config, scheduler_config, parameters


def _product(shape: list[int]) -> int:
    result = 1
    for size in shape:
        result *= size
    return result


# -------------------------------------------------------------------------------------------------------------
# Pushing
# -------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushContents:
    """What `push_to_hub` uploads from a folder, besides the model card.

    Attributes:
        pipeline_dir: the saved pipeline.
        files: path in the repo → local file: the pipeline's files (see `pipeline_files`) and the sample grid.
        training_summary: `training_summary.json` of a training output folder, if any.
        evaluation_report: `evaluation/report.json` of a training output folder, if any.
        sample_image: the path in the repo of the sample grid, if there is one.
    """

    pipeline_dir: Path
    files: dict[str, Path]
    training_summary: dict[str, Any] | None = None
    evaluation_report: dict[str, Any] | None = None
    sample_image: str | None = None

    @property
    def repo_files(self) -> list[str]:
        """Every path the repo will hold after the push (the card included)."""
        return sorted([*self.files, "README.md"])


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or none when there is no such file; a ValueError naming it when unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"Unreadable {path}: {error}.") from error
    if not isinstance(data, dict):
        raise ValueError(f"Unreadable {path}: it is not a JSON object.")
    return data


def _refuse_pickles(pipeline_dir: Path) -> None:
    pickles = sorted(p for p in pipeline_dir.rglob("*") if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if pickles:
        raise ValueError(
            f"Refusing to push {pipeline_dir}: {pickles[0]} is a pickle file, which can run arbitrary code when "
            "loaded. Save the pipeline with save_pretrained (safetensors) and remove pickle files before pushing."
        )


def collect_push_contents(folder: str | Path) -> PushContents:
    """What to push from `folder`: a training output folder (`pipeline/`, `training_summary.json`, `samples.png`,
    `evaluation/report.json`) or a saved pipeline folder (with `model_index.json` at its root).

    Raises:
        FileNotFoundError: `folder` is neither, or the pipeline misses a file (named).
        ValueError: the pipeline folder holds a pickle file (named), or a JSON file is unreadable.
    """
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        pipeline_dir, run_dir = folder, None
    elif (folder / "pipeline" / "model_index.json").is_file():
        pipeline_dir, run_dir = folder / "pipeline", folder
    elif not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist or is not a folder.")
    else:
        raise FileNotFoundError(
            f"{folder} is neither a saved pipeline (no model_index.json) nor a training output folder (no "
            "pipeline/model_index.json)."
        )
    _refuse_pickles(pipeline_dir)
    check_pipeline_folder(pipeline_dir)
    files = {name: pipeline_dir / name for name in pipeline_files(pipeline_dir)}
    summary = report = sample_image = None
    if run_dir is not None:
        summary = _read_json(run_dir / "training_summary.json")
        report = _read_json(run_dir / "evaluation" / "report.json")
        if (run_dir / SAMPLE_IMAGE).is_file():
            sample_image = SAMPLE_IMAGE
            files[SAMPLE_IMAGE] = run_dir / SAMPLE_IMAGE
    return PushContents(pipeline_dir, files, summary, report, sample_image)


def _render_card(contents: PushContents, repo_id: str, license: str) -> str:
    unet_config, scheduler_config, parameters = _pipeline_configs(contents.pipeline_dir)
    card = model_card(
        repo_id,
        unet_config,
        scheduler_config,
        parameters=parameters,
        training_summary=contents.training_summary,
        evaluation_report=contents.evaluation_report,
        sample_image=contents.sample_image,
        files=contents.repo_files,
        license=license,
    )
    return str(check_model_card(card))


def check_can_push(repo_id: str, token: str | None = None) -> str:
    """Check, without any request, that `repo_id` is a valid repo id and that a token is there; return the token.

    Raises:
        huggingface_hub.errors.HFValidationError (a ValueError): an invalid repo id.
        LocalTokenNotFoundError (also a ValueError here): no token in `token`, `HF_TOKEN` or `hf auth login`'s file.
    """
    validate_repo_id(repo_id)
    token = token or get_token()
    if not token:
        raise _NoToken(
            "No Hugging Face token found: set HF_TOKEN or run `hf auth login` with a token that has write access."
        )
    return token


class _NoToken(LocalTokenNotFoundError, ValueError):
    """No token: huggingface_hub's error, and a ValueError like every other setting a user must fix."""


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    license: str = DEFAULT_LICENSE,
) -> CommitInfo:
    """Push the pipeline in `folder` (a training output folder or a saved pipeline) to the Hub repo `repo_id`, with
    its model card and sample grid, in one commit; create the repo (and the branch `revision`) if needed.

    Everything is checked before the first request: the repo id, the folder, pickle files (refused), the card.

    Args:
        folder: a training output folder (`pipeline/`, `training_summary.json`, `samples.png`, optionally
            `evaluation/report.json`) or a folder written by `save_pretrained`.
        repo_id: "user/name" or "org/name" ("name" alone: the token's user).
        token: a token with write access; default: `HF_TOKEN` or the one saved by `hf auth login`.
        private: make a new repo private (an existing repo keeps its visibility; a warning says so if it differs).
        revision: the branch to push to (created from `main` if missing); default `main`.
        commit_message: default `DEFAULT_COMMIT_MESSAGE`.
        create_pr: open a pull request (against `revision`) instead of committing to it.
        license: the license identifier written in the card's metadata.

    Returns:
        The commit's `CommitInfo`, a `str` (the commit URL) with `.oid`, `.repo_url` and `.pr_url`.

    Raises:
        FileNotFoundError, ValueError: see `collect_push_contents`; an invalid repo id.
        LocalTokenNotFoundError: no token.
        huggingface_hub.errors.HfHubHTTPError: the Hub refused (missing rights, ...).
    """
    token = check_can_push(repo_id, token)
    contents = collect_push_contents(folder)
    readme = _render_card(contents, repo_id, license)
    api = HfApi(token=token)
    requested, repo_id = repo_id, api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if private is not None:
        visibility = api.model_info(repo_id).private
        if visibility is not None and visibility != private:
            warnings.warn(
                f"{repo_id} already exists and is {'private' if visibility else 'public'}; its visibility was not "
                "changed (change it in the repo's settings).",
                stacklevel=2,
            )
    if repo_id != requested:  # "name" alone became "user/name": the usage snippets must say so
        readme = _render_card(contents, repo_id, license)
    if revision not in (None, constants.DEFAULT_REVISION) and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    operations = [CommitOperationAdd(path, str(local)) for path, local in sorted(contents.files.items())]
    operations.append(CommitOperationAdd("README.md", readme.encode("utf-8")))
    return api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
        revision=revision,
        create_pr=create_pr,
    )


# -------------------------------------------------------------------------------------------------------------
# Downloading
# -------------------------------------------------------------------------------------------------------------


def _prepend(error: BaseException, message: str) -> None:
    """Put `message` in front of the message of `error` (keeping its type, so callers still catch it)."""
    error.args = (f"{message}\n{error.args[0]}" if error.args else message, *error.args[1:])


def _pickle_files_on_the_hub(repo_id: str, commit: str, cache_dir: str | Path | None) -> list[str]:
    """The pickle files of the repo at `commit`, from the file listing the download cached (empty if unknown)."""
    try:
        from huggingface_hub import get_cached_repo_tree
        from huggingface_hub.errors import CachedRepoTreeNotFoundError
    except ImportError:  # older huggingface_hub: no cached listing
        return []
    try:
        tree = get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache_dir)
    except CachedRepoTreeNotFoundError:
        return []
    return sorted(f.path for f in tree if f.path.endswith(PICKLE_SUFFIXES))


def download_pipeline(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    allow_pickle: bool = False,
) -> Path:
    """Download the pipeline in the Hub repo `repo_id` into the Hub cache (or find it there) and check it; return
    the folder of its snapshot.

    Only configurations and safetensors weights are fetched, and pickle weights only with `allow_pickle=True`. With
    `HF_HUB_OFFLINE=1` or `local_files_only=True`, or when the Hub cannot be reached, the cached snapshot is used.

    Raises:
        FileNotFoundError: `repo_id` is not a valid repo id (nor a local folder).
        huggingface_hub.errors.RepositoryNotFoundError: no such repo, or a private one without access (named).
        huggingface_hub.errors.RevisionNotFoundError: no such branch, tag or commit in the repo (named).
        huggingface_hub.errors.LocalEntryNotFoundError: offline, and the pipeline is not in the cache (named).
        ValueError: the repo holds pickle weights only and `allow_pickle` is False, or corrupt weights (named).
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise FileNotFoundError(f"{repo_id!r} is neither a local folder nor a Hub repo id: {error}") from error
    patterns = list(_DOWNLOAD_PATTERNS) + ([f"*{suffix}" for suffix in PICKLE_SUFFIXES] if allow_pickle else [])
    at = f"revision {revision!r} of " if revision else ""
    try:
        snapshot = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                token=token,
                force_download=force_download,
                allow_patterns=patterns,
            )
        )
    except GatedRepoError:
        raise
    except RepositoryNotFoundError as error:
        local = " There is no local folder of that name either." if "/" in repo_id else ""
        _prepend(
            error,
            f"Model repo {repo_id!r} not found on {constants.ENDPOINT}: it does not exist, or it is private and "
            f"the token (HF_TOKEN or `hf auth login`) has no access to it.{local}",
        )
        raise
    except RevisionNotFoundError as error:
        _prepend(error, f"Revision {revision!r} not found in model repo {repo_id!r}: no branch, tag or commit has "
                        "that name.")  # fmt: skip
        raise
    except LocalEntryNotFoundError as error:
        _prepend(
            error,
            f"The pipeline {at}{repo_id!r} is not in the Hub cache, and the Hub was not asked (offline mode or "
            "local_files_only) or could not be reached.",
        )
        raise
    try:
        check_pipeline_folder(snapshot, allow_pickle=allow_pickle)
    except FileNotFoundError as error:
        pickles = [] if allow_pickle else _pickle_files_on_the_hub(repo_id, snapshot.name, cache_dir)
        if pickles:
            raise ValueError(
                f"Model repo {repo_id!r} has pickle weights only ({', '.join(pickles)}), which can run arbitrary "
                "code when loaded: pass allow_pickle=True only if you trust this repo."
            ) from error
        raise FileNotFoundError(
            f"Model repo {repo_id!r} (commit {snapshot.name}) is not a pipeline: {error}"
        ) from error
    return snapshot


# -------------------------------------------------------------------------------------------------------------
# ddpm-hf push
# -------------------------------------------------------------------------------------------------------------


def _network_errors() -> tuple[type[BaseException], ...]:
    """The transport errors of the HTTP clients huggingface_hub may use (a refused connection, a timeout)."""
    classes: list[type[BaseException]] = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError")):
        try:
            classes.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(classes)


def _one_line(error: BaseException, secret: str | None) -> str:
    """The message of `error` on one line, with `secret` (the token) blanked out should it ever appear."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
    return text.replace(secret, "***") if secret else text


def main(argv: list[str] | None = None, prog: str = "ddpm-hf push") -> int:
    """`ddpm-hf push FOLDER --repo-id user/name`: push a trained pipeline to the Hub; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Push a DDPM pipeline (a training output folder, or a folder written by save_pretrained) to "
        "the Hugging Face Hub with its model card. The token comes from HF_TOKEN or `hf auth login`.",
    )
    parser.add_argument("folder", type=Path, help="a training output folder (with pipeline/) or a pipeline folder")
    parser.add_argument("--repo-id", required=True, help="the Hub repo, user/name or org/name")
    parser.add_argument("--private", action="store_true", default=None, help="create the repo as private")
    parser.add_argument("--revision", default=None, help="the branch to push to (created if missing; default main)")
    parser.add_argument("--commit-message", default=None, help=f'default: "{DEFAULT_COMMIT_MESSAGE}"')
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--license", default=DEFAULT_LICENSE, help=f"the card's license (default {DEFAULT_LICENSE})")
    arguments = parser.parse_args(argv)
    try:
        commit = push_to_hub(
            arguments.folder,
            arguments.repo_id,
            private=arguments.private,
            revision=arguments.revision,
            commit_message=arguments.commit_message,
            create_pr=arguments.create_pr,
            license=arguments.license,
        )
    except (ValueError, OSError, *_network_errors()) as error:
        print(f"{prog}: error: {_one_line(error, get_token())}", file=sys.stderr)
        return 1
    print(f"Pushed {arguments.folder} to {commit.repo_url}: {commit.pr_url or commit.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
