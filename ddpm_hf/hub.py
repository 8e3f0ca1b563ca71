"""Pipelines on the Hugging Face Hub: pushing a saved pipeline folder with its model card, downloading one, and
the requests to the Hub, each with a time limit. What a pipeline folder may hold is checked by
`ddpm_hf.pipeline_folder` before anything is pushed or loaded.

Pushing (`push_to_hub`, `ddpm-hf push`) uploads the pipeline exactly as `save_pretrained` wrote it, a model card
`README.md` (see `ddpm_hf.model_card`) and the run's sample grid `samples.png` when there is one. Only those files
go up: never checkpoints, optimizer states, logs, caches or any other file of the folder, and nothing at all from a
folder that holds pickle weights. The token comes from where `huggingface_hub` looks for it (`HF_TOKEN`, `hf auth
login`) or from the caller; it is sent to the Hub only, never printed, logged or written. `check_can_push` checks the
token and the right to write to the repo before anything is uploaded (and before training, for `--push-to-hub`).

    ddpm-hf push OUTPUT_DIR --repo-id user/name [--private] [--revision BRANCH] [--commit-message MESSAGE]

Downloading (`download_pipeline`, used by `DDPMPipeline.from_pretrained` for repo ids) goes through the Hub cache
(`HF_HUB_CACHE`), skips pickle files unless they are allowed, works offline from a warm cache (`HF_HUB_OFFLINE=1` or
`local_files_only=True`), and names the repo or revision that does not exist.

Every request to the Hub waits at most `DDPM_HF_HUB_TIMEOUT` seconds (default 60) to connect, send or receive the
next bytes, so that a Hub that stops answering is an error instead of a hang. Every failure of the Hub (refused,
unreachable, timed out, not found) is a `HubError`: one line that names the endpoint and never the token.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, constants, get_token, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    LocalTokenNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import _http as hf_http
from huggingface_hub.utils import set_client_factory, validate_repo_id

from .model_card import DEFAULT_LICENSE, check_model_card, model_card
from .pipeline_folder import (
    ALLOW_PICKLE_HINT,
    PICKLE_SUFFIXES,
    check_pipeline_folder,
    pipeline_configs,
    pipeline_files,
    read_json_object,
)

__all__ = [
    "HubError",
    "check_can_push",
    "PushContents",
    "collect_push_contents",
    "push_to_hub",
    "download_pipeline",
    "main",
    "DEFAULT_COMMIT_MESSAGE",
]

DEFAULT_COMMIT_MESSAGE = "Upload DDPM pipeline with ddpm-hf"
SAMPLE_IMAGE = "samples.png"  # the sample grid of a training run, uploaded under this name
# What a download fetches: configurations and safetensors weights (README, images and pickles stay on the Hub).
_DOWNLOAD_PATTERNS = ("*.json", "*.safetensors")


_TIMEOUT_VARIABLE = "DDPM_HF_HUB_TIMEOUT"
_DEFAULT_TIMEOUT = 60.0  # seconds a Hub request may wait to connect, send or receive the next bytes


class HubError(OSError):
    """A request to the Hub failed: refused, unreachable, timed out, not found. The message is one line that names
    the endpoint and never the token.

    An OSError, as the errors of `huggingface_hub` and of reading files are. A failure that `huggingface_hub` reports
    with an error of its own (`RepositoryNotFoundError`, `RevisionNotFoundError`, `LocalEntryNotFoundError`,
    `HfHubHTTPError`, ...) is raised as an instance of both classes, so that code catching those keeps working.
    """


# -------------------------------------------------------------------------------------------------------------
# Hub requests: a time limit on each, and one-line errors
# -------------------------------------------------------------------------------------------------------------

_limit_lock = threading.Lock()
_limited_calls = 0  # calls of this module under way, in any thread, whose requests carry the time limit
_factory_before: Any = None  # huggingface_hub's client factory before the first of them, put back after the last


def _hub_timeout() -> float:
    """Seconds a Hub request may wait to connect, send or receive the next bytes: `DDPM_HF_HUB_TIMEOUT`, default 60."""
    text = os.environ.get(_TIMEOUT_VARIABLE, "").strip()
    if not text:
        return _DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{_TIMEOUT_VARIABLE} must be a positive number of seconds, got {text!r}.")
    return seconds


def _http_classes(name: str) -> tuple[type[BaseException], ...]:
    """The error class `name` (RequestError: no answer at all; TimeoutException: none in time) of the HTTP client
    module that huggingface_hub uses: `httpx2` (huggingface_hub 2) or `httpx` (1)."""
    classes: list[type[BaseException]] = []
    for module in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError, AttributeError):
            classes.append(getattr(importlib.import_module(module), name))
    return tuple(classes)


@contextlib.contextmanager
def _time_limited_requests(seconds: float) -> Iterator[None]:
    """Within the block, each request huggingface_hub sends waits at most `seconds` to connect, send, receive the
    next bytes or get a pooled connection (a shorter limit of its own is kept).

    huggingface_hub's HTTP client has no time limit, and most of its calls set none (whoami, create_repo, repo_info,
    preupload, create_commit, the LFS upload): a Hub that accepts the connection and never answers would hang them
    forever. The limit is a request hook on the clients created while a block runs; the client factory in place
    before (the user's own, if any) is put back when the last block ends.
    """
    global _limited_calls, _factory_before
    with _limit_lock:
        _limited_calls += 1
        if _limited_calls == 1:
            # huggingface_hub has no getter for its factory: read it where set_client_factory keeps it
            _factory_before = getattr(hf_http, "_GLOBAL_CLIENT_FACTORY", hf_http.default_client_factory)
            set_client_factory(lambda factory=_factory_before: _with_time_limit(factory(), seconds))
    try:
        yield
    finally:
        with _limit_lock:
            _limited_calls -= 1
            if _limited_calls == 0:
                set_client_factory(_factory_before)


def _with_time_limit(client: Any, seconds: float) -> Any:
    """`client` (an httpx client) with a request hook that caps every time limit of a request at `seconds`."""

    def limit(request: Any) -> None:
        limits = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {
            kind: seconds if limits.get(kind) is None else min(limits[kind], seconds)
            for kind in ("connect", "read", "write", "pool")
        }

    client.event_hooks = {**client.event_hooks, "request": [*client.event_hooks["request"], limit]}
    return client


def _endpoint() -> str:
    """The Hub's address, as errors show it: without any user or password in it."""
    scheme, _, rest = constants.ENDPOINT.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"


def _as_hub_error(message: str, cause: BaseException) -> HubError:
    """A HubError saying `message`; when `cause` is one of huggingface_hub's errors (OSErrors all), also an instance
    of its class, with its response and request id, so that `except RepositoryNotFoundError` and the like still
    catch it."""
    if not (isinstance(cause, OSError) and type(cause).__module__.startswith("huggingface_hub")):
        return HubError(message)
    cls = _hub_error_class(type(cause))
    error = cls.__new__(cls, message)
    OSError.__init__(error, message)  # not huggingface_hub's __init__, which wants the response as an argument
    error.__dict__.update(cause.__dict__)  # the response, request id and server message, for those who read them
    return error


_HUB_ERROR_CLASSES: dict[type, type] = {}


def _hub_error_class(cls: type) -> type:
    """The subclass of both HubError and `cls` (one per class, named as `cls`)."""
    if cls not in _HUB_ERROR_CLASSES:
        _HUB_ERROR_CLASSES[cls] = type(cls.__name__, (HubError, cls), {"__module__": __name__})
    return _HUB_ERROR_CLASSES[cls]


def _what_happened(error: BaseException, timeout: float) -> str:
    """Why a Hub request failed, as the end of a sentence: no answer in time, unreachable, offline, or the status."""
    if isinstance(error, OfflineModeIsEnabled):
        return "offline mode is on (HF_HUB_OFFLINE=1; unset it to reach the Hub)"
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        return f"the Hub at {_endpoint()} answered {_status(error)}"
    if isinstance(error, _http_classes("TimeoutException")):
        return (
            f"the Hub at {_endpoint()} did not answer within {timeout:g} s ({_TIMEOUT_VARIABLE} sets how long to wait)"
        )
    reason = " ".join(str(error).split()) or type(error).__name__
    return f"the Hub at {_endpoint()} could not be reached ({reason})"


def _status(error: HfHubHTTPError) -> str:
    """The status of the Hub's answer and what the Hub said, on one line ("403 Forbidden: ...")."""
    said = " ".join((error.server_message or "").split()).rstrip(".")
    return f"{error.response.status_code} {error.response.reason_phrase}" + (f": {said}" if said else "")


@contextlib.contextmanager
def _hub_requests(doing: str) -> Iterator[float]:
    """Run the block's Hub requests under the time limit (which it yields), and turn their failures into one-line
    HubErrors: "`doing` failed: the Hub at ... did not answer within 60 s (...)."."""
    timeout = _hub_timeout()
    with _time_limited_requests(timeout):
        try:
            yield timeout
        except HubError:
            raise
        except (HfHubHTTPError, OfflineModeIsEnabled, *_http_classes("RequestError")) as error:
            raise _as_hub_error(f"{doing} failed: {_what_happened(error, timeout)}.", error) from error


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
    elif folder.is_file():
        raise FileNotFoundError(
            f"{folder} is a file: pass a training output folder or a folder written by save_pretrained."
        )
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
        summary = read_json_object(run_dir / "training_summary.json")
        report = read_json_object(run_dir / "evaluation" / "report.json")
        if (run_dir / SAMPLE_IMAGE).is_file():
            sample_image = SAMPLE_IMAGE
            files[SAMPLE_IMAGE] = run_dir / SAMPLE_IMAGE
    return PushContents(pipeline_dir, files, summary, report, sample_image)


def _render_card(contents: PushContents, repo_id: str, license: str) -> str:
    unet_config, scheduler_config, parameters = pipeline_configs(contents.pipeline_dir)
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


def _token_for_push(repo_id: str, token: str | None) -> str:
    """Check, without any request, that `repo_id` is a valid repo id and that a token is there; return the token."""
    validate_repo_id(repo_id)
    token = token or get_token()
    if not token:
        raise _NoToken(
            "No Hugging Face token found: set HF_TOKEN or run `hf auth login` with a token that has write access."
        )
    return token


class _NoToken(LocalTokenNotFoundError, ValueError):
    """No token: huggingface_hub's error, and a ValueError like every other setting a user must fix."""


def _token_hint(given: str | None, token: str) -> tuple[str, str]:
    """(where the token came from, what to do about it), for the messages of a refused token."""
    create = f"create a token with write access at {_endpoint()}/settings/tokens"
    if given:
        return "passed as token=", f"{create} and pass it"
    if token in (os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")):
        return "in HF_TOKEN", f"{create} and set HF_TOKEN to it (HF_TOKEN takes precedence over `hf auth login`)"
    return "saved by `hf auth login`", f"{create} and run `hf auth login` with it"


def _token_user(api: HfApi, given: str | None, token: str) -> str:
    """The user of `token`, which the Hub checked valid and not read-only (a whoami request)."""
    source, hint = _token_hint(given, token)
    try:
        info = api.whoami()
    except HfHubHTTPError as error:
        if error.response is None or error.response.status_code != 401:
            raise
        raise _as_hub_error(
            f"The Hub at {_endpoint()} refused the Hugging Face token {source}: it is invalid or expired (401): "
            f"{hint}.",
            error,
        ) from error
    if ((info.get("auth") or {}).get("accessToken") or {}).get("role") == "read":
        raise HubError(f"The Hugging Face token {source} (user {info['name']!r}) is read-only: {hint}.")
    return info["name"]


def check_can_push(repo_id: str, token: str | None = None, *, private: bool | None = None) -> str:
    """Check that the token may push to the Hub repo `repo_id`, creating the repo if it does not exist (private when
    `private` is True); return the full repo id ("name" alone becomes "user/name").

    Checked in this order, each failure a one-line error saying what to do: the repo id and that there is a token
    (no request), the token itself (invalid, expired or read-only: `whoami`), then the right to write to the repo
    (created if missing, then the Hub's write check). `ddpm-hf train --push-to-hub` calls it before training.

    Raises:
        ValueError: an invalid repo id (HFValidationError), no token (LocalTokenNotFoundError), or an invalid
            `DDPM_HF_HUB_TIMEOUT`.
        HubError: the Hub refused the token or the write, could not be reached, or did not answer in time.
    """
    given = token
    token = _token_for_push(repo_id, token)
    api = HfApi(token=token)
    with _hub_requests("Checking the Hugging Face token"):
        user = _token_user(api, given, token)
    repo_id = repo_id if "/" in repo_id else f"{user}/{repo_id}"
    with _hub_requests(f"Creating or checking the repo {repo_id}"):
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            api.auth_check(repo_id, write=True)
        except HfHubHTTPError as error:
            if error.response is None or error.response.status_code not in (401, 403):
                raise
            namespace, name = repo_id.split("/")
            raise _as_hub_error(
                f"User {user!r} may not write to {repo_id} on {_endpoint()} ({_status(error)}): push to "
                f"a namespace you can write to (such as {user}/{name}), or use a token with write access to "
                f"{namespace!r} (HF_TOKEN or `hf auth login`).",
                error,
            ) from error
    return repo_id


def _check_revision(revision: str | None) -> None:
    """What a push may target: a branch (created if missing) or an open pull request (`refs/pr/N`)."""
    if revision is None:
        return
    is_ref = revision.startswith("refs/")
    if (
        not revision
        or any(character.isspace() for character in revision)
        or re.fullmatch(r"[0-9a-f]{40}", revision)
        or (is_ref and not re.fullmatch(r"refs/pr/\d+", revision))
    ):
        raise ValueError(
            f"revision (--revision) must be a branch name or a pull request ref refs/pr/N, got {revision!r}."
        )


def _size(size: float) -> str:
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


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

    Everything is checked before the first request: the repo id, the token's presence, the revision, the folder,
    pickle files (refused), the card, `DDPM_HF_HUB_TIMEOUT`. Then `check_can_push` checks the token and the right to
    write; a line on stdout says what is uploaded (files, size) and where, before the upload.

    Args:
        folder: a training output folder (`pipeline/`, `training_summary.json`, `samples.png`, optionally
            `evaluation/report.json`) or a folder written by `save_pretrained`.
        repo_id: "user/name" or "org/name" ("name" alone: the token's user).
        token: a token with write access; default: `HF_TOKEN` or the one saved by `hf auth login`.
        private: make a new repo private (an existing repo keeps its visibility; a warning says so if it differs).
        revision: the branch to push to (created from `main` if missing), or an open pull request `refs/pr/N`;
            default `main`.
        commit_message: default `DEFAULT_COMMIT_MESSAGE`.
        create_pr: open a pull request (against `revision`, which must exist) instead of committing to it.
        license: the license identifier written in the card's metadata.

    Returns:
        The commit's `CommitInfo`, a `str` (the commit URL) with `.oid`, `.repo_url` and `.pr_url`.

    Raises:
        FileNotFoundError, ValueError: see `collect_push_contents`; an invalid repo id or revision; no token.
        HubError: the Hub refused the token or the push, could not be reached, or did not answer in time.
    """
    token_for_checks = _token_for_push(repo_id, token)
    _check_revision(revision)
    contents = collect_push_contents(folder)
    readme = _render_card(contents, repo_id, license)
    requested, repo_id = repo_id, check_can_push(repo_id, token, private=private)
    api = HfApi(token=token_for_checks)
    with _hub_requests(f"Preparing the push to {repo_id}"):
        visibility = api.model_info(repo_id).private if private is not None else None
        if revision not in (None, constants.DEFAULT_REVISION) and not create_pr and not revision.startswith("refs/"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
    if visibility is not None and visibility != private:
        warnings.warn(
            f"{repo_id} already exists and is {'private' if visibility else 'public'}; its visibility was not "
            "changed (change it in the repo's settings).",
            stacklevel=2,
        )
    if repo_id != requested:  # "name" alone became "user/name": the usage snippets must say so
        readme = _render_card(contents, repo_id, license)
    operations = [CommitOperationAdd(path, str(local)) for path, local in sorted(contents.files.items())]
    operations.append(CommitOperationAdd("README.md", readme.encode("utf-8")))
    size = sum(local.stat().st_size for local in contents.files.values()) + len(readme.encode("utf-8"))
    target = f"{'a pull request against ' if create_pr else ''}{revision or constants.DEFAULT_REVISION}"
    print(f"Pushing {len(operations)} files ({_size(size)}) to {_endpoint()}/{repo_id}, {target}", flush=True)
    with _hub_requests(f"Uploading to {repo_id}"):
        try:
            return api.create_commit(
                repo_id,
                operations,
                commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
                revision=revision,
                create_pr=create_pr,
            )
        except RevisionNotFoundError as error:
            raise _as_hub_error(
                f"{repo_id} has no branch or pull request {revision!r}: create_pr (--create-pr) needs an existing "
                "branch (a push without it creates the branch), and refs/pr/N an open pull request.",
                error,
            ) from error


# -------------------------------------------------------------------------------------------------------------
# Downloading
# -------------------------------------------------------------------------------------------------------------


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


def _not_downloaded(
    error: BaseException, repo_id: str, revision: str | None, local_files_only: bool, timeout: float
) -> str:
    """Why `snapshot_download` could not give the pipeline in `repo_id`, from the error it raised."""
    if isinstance(error, GatedRepoError):
        return (
            f"Model repo {repo_id!r} is gated: accept its conditions at {_endpoint()}/{repo_id} and use a token of "
            "an account that did (HF_TOKEN, `hf auth login` or token=)."
        )
    if isinstance(error, RepositoryNotFoundError):
        local = " There is no local folder of that name either." if "/" in repo_id else ""
        return (
            f"Model repo {repo_id!r} not found on {_endpoint()}: it does not exist, or it is private and the token "
            f"(HF_TOKEN, `hf auth login` or token=) has no access to it.{local}"
        )
    if isinstance(error, RevisionNotFoundError):
        return f"Revision {revision!r} not found in model repo {repo_id!r}: no branch, tag or commit has that name."
    if local_files_only:
        why = "local_files_only=True keeps the Hub from being asked"
    elif error.__cause__ is not None:
        why = _what_happened(error.__cause__, timeout)
    else:
        why = "the Hub could not be asked"
    at = f"revision {revision!r} of " if revision else ""
    return f"The pipeline {at}{repo_id!r} is not in the Hub cache, and {why}."


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
        ValueError: an invalid `DDPM_HF_HUB_TIMEOUT`; the repo holds pickle weights only and `allow_pickle` is
            False, or corrupt weights, or a `model_index.json` naming classes a DDPM pipeline cannot hold (named).
        HubError: the Hub could not give the pipeline, each also huggingface_hub's own error: no such repo, or a
            private one without access (RepositoryNotFoundError), no such revision (RevisionNotFoundError), not in
            the cache while offline, unreachable or not answering in time (LocalEntryNotFoundError); all named.
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise FileNotFoundError(f"{repo_id!r} is neither a local folder nor a Hub repo id: {error}") from error
    patterns = list(_DOWNLOAD_PATTERNS) + ([f"*{suffix}" for suffix in PICKLE_SUFFIXES] if allow_pickle else [])
    at = f"revision {revision!r} of " if revision else ""
    with _hub_requests(f"Downloading {at}{repo_id!r}") as timeout:
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
        except (RepositoryNotFoundError, RevisionNotFoundError, LocalEntryNotFoundError) as error:
            message = _not_downloaded(error, repo_id, revision, local_files_only, timeout)
            raise _as_hub_error(message, error) from error
    try:
        check_pipeline_folder(snapshot, allow_pickle=allow_pickle)
    except FileNotFoundError as error:
        pickles = [] if allow_pickle else _pickle_files_on_the_hub(repo_id, snapshot.name, cache_dir)
        if pickles:
            raise ValueError(
                f"Model repo {repo_id!r} has pickle weights only ({', '.join(pickles)}), which can run arbitrary "
                f"code when loaded: {ALLOW_PICKLE_HINT} this repo."
            ) from error
        raise FileNotFoundError(
            f"Model repo {repo_id!r} (commit {snapshot.name}) is not a pipeline: {error}"
        ) from error
    return snapshot


# -------------------------------------------------------------------------------------------------------------
# ddpm-hf push
# -------------------------------------------------------------------------------------------------------------


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
        epilog=f"{_TIMEOUT_VARIABLE}: how many seconds each request waits for the Hub to connect or answer "
        f"(default {_DEFAULT_TIMEOUT:g}).",
    )
    parser.add_argument("folder", type=Path, help="a training output folder (with pipeline/) or a pipeline folder")
    parser.add_argument("--repo-id", required=True, help="the Hub repo, user/name or org/name")
    parser.add_argument("--private", action="store_true", default=None, help="create the repo as private")
    parser.add_argument(
        "--revision", default=None, help="the branch to push to (created if missing; default main), or refs/pr/N"
    )
    parser.add_argument("--commit-message", default=None, help=f'default: "{DEFAULT_COMMIT_MESSAGE}"')
    parser.add_argument(
        "--create-pr", action="store_true", help="open a pull request against --revision (an existing branch)"
    )
    parser.add_argument("--license", default=DEFAULT_LICENSE, help=f"the card's license (default {DEFAULT_LICENSE})")
    parser.add_argument("--token", help=argparse.SUPPRESS)  # only to refuse it without echoing its value
    arguments = parser.parse_args(argv)
    if arguments.token is not None:
        parser.error("there is no --token option, so that a token never lands in shell history or process listings: "
                     "set HF_TOKEN or run `hf auth login`")  # fmt: skip
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
    except HubError as error:
        unchanged = f"Nothing was lost: {arguments.folder} is unchanged."
        print(f"{prog}: error: {_one_line(error, get_token())} {unchanged}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:
        print(f"{prog}: error: {_one_line(error, get_token())}", file=sys.stderr)
        return 1
    print(f"Pushed {arguments.folder} to {commit.repo_url}: {commit.pr_url or commit.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
