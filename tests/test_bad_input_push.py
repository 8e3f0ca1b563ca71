"""What `ddpm-hf push` refuses: one row per bad input, each checked for its exit status, its one-line message and a
folder left byte for byte as it was (`bad_input.assert_refused`), and for a Hub that holds no new commit.

The Hub is the loopback one of `hub_server.py` (users alice and bob, alice's token in HF_TOKEN), or nothing at its
address (connections refused), or a server there that accepts connections and never answers. Rows are quick: the
pipeline is a ddpm-tiny one, built once and copied for each row.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import diffusers
import PIL.Image
import pytest
import torch
from bad_input import Refusal, assert_refused
from hub_server import HubError as ServerRefusal
from hub_server import HubServer, Repository, SilentServer
from huggingface_hub import HfApi, constants
from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

import ddpm_hf

pytestmark = [
    pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]

TOKEN = "hf_DDPMtestTOKEN0x5eCr3t0nEVERshown"  # alice's
BOB_TOKEN = "hf_bobTOKEN0000000000000000000000"
READ_TOKEN = "hf_aliceREADonly000000000000000000"  # alice's, read-only
ENDPOINT = r"http://127\.0\.0\.1:\d+"
UNCHANGED = r"Nothing was lost: \S+ is unchanged\.$"


def _add_pickle(folder: Path) -> None:
    torch.save({"w": torch.zeros(2)}, folder / "pipeline" / "unet" / "diffusion_pytorch_model.bin")


def _edit_index(**entries: object) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        index = json.loads((folder / "pipeline" / "model_index.json").read_text())
        (folder / "pipeline" / "model_index.json").write_text(json.dumps({**index, **entries}))

    return edit


def _nest_a_pipeline(folder: Path) -> None:
    """A whole pipeline as the "unet" component (safetensors, so that the component check is what refuses it)."""
    torch.manual_seed(0)
    inner = diffusers.DDPMPipeline(ddpm_hf.create_unet("ddpm-tiny"), diffusers.DDPMScheduler(num_train_timesteps=10))
    inner.save_pretrained(folder / "pipeline" / "unet")
    _edit_index(unet=["diffusers", "DDPMPipeline"])(folder)


# What each row does to its copy of the training output folder before the command runs.
FOLDERS: dict[str, Callable[[Path], None]] = {
    "run": lambda folder: None,
    "missing": lambda folder: shutil.rmtree(folder),
    "file": lambda folder: shutil.rmtree(folder) or folder.write_text("not a folder"),
    "empty": lambda folder: [shutil.rmtree(path) if path.is_dir() else path.unlink() for path in folder.iterdir()],
    "pickle": _add_pickle,
    "malformed index": lambda folder: (folder / "pipeline" / "model_index.json").write_text('{"unet": ['),
    "nested pipeline": _nest_a_pipeline,
    "custom code": _edit_index(_class_name=["pipeline", "MyPipeline"]),
    "no weights": lambda folder: (folder / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").unlink(),
    "unreadable summary": lambda folder: (folder / "training_summary.json").write_text("{steps: 10"),
}


@dataclass(frozen=True)
class Case:
    """A row and its circumstances: the folder (a key of FOLDERS), the Hub ("up", "down": connections refused,
    "silent": never answers, "offline": HF_HUB_OFFLINE), the environment (None unsets a variable), repos that
    exist before, and routes the Hub refuses."""

    row: Refusal
    folder: str = "run"
    hub: str = "up"
    env: dict[str, str | None] = field(default_factory=dict)
    existing: tuple[str, ...] = ()
    refusals: dict[str, ServerRefusal] = field(default_factory=dict)


PUSH = ["push", "{folder}", "--repo-id", "alice/ddpm-tiny"]
CASES = [
    # ---- the folder: refused before any request --------------------------------------------------------------
    Case(Refusal("missing folder", PUSH, r"/run does not exist or is not a folder\.$"), folder="missing"),
    Case(Refusal("folder is a file", PUSH, r"/run is a file: pass a training output folder"), folder="file"),
    Case(Refusal("folder without a pipeline", PUSH, r"/run is neither a saved pipeline"), folder="empty"),
    Case(Refusal("pickle file", PUSH, r"diffusion_pytorch_model\.bin is a pickle file"), folder="pickle"),
    Case(Refusal("malformed model_index.json", PUSH, r"Unreadable \S+/model_index\.json"), folder="malformed index"),
    Case(
        Refusal("nested pipeline", PUSH, r'model_index\.json: component .unet. is \["diffusers", "DDPMPipeline"\]'),
        folder="nested pipeline",
    ),
    Case(Refusal("custom code", PUSH, r"model_index\.json: _class_name .* names custom code"), folder="custom code"),
    Case(Refusal("no weights", PUSH, r"Missing weights file \S+/unet/diffusion_pytorch"), folder="no weights"),
    Case(Refusal("bad summary", PUSH, r"Unreadable \S+/training_summary\.json"), folder="unreadable summary"),
    # ---- the command line and the environment: refused before any request ------------------------------------
    Case(Refusal("bad repo id", ["push", "{folder}", "--repo-id", "alice/not a repo"], "Repo id must")),
    Case(Refusal("repo id of three parts", ["push", "{folder}", "--repo-id", "a/b/c"], "Repo id must")),
    Case(Refusal("no repo id", ["push", "{folder}"], "the following arguments are required: --repo-id", 2)),
    Case(
        Refusal(
            "no --token option", [*PUSH, "--token", TOKEN], "there is no --token option, so that a token never lands", 2
        )
    ),
    Case(
        Refusal("no token", PUSH, r"No Hugging Face token found: set HF_TOKEN or run `hf auth login`"),
        env={"HF_TOKEN": None},
    ),  # fmt: skip
    Case(
        Refusal("zero timeout", PUSH, r"DDPM_HF_HUB_TIMEOUT must be a positive number of seconds, got '0'\.$"),
        env={"DDPM_HF_HUB_TIMEOUT": "0"},
    ),  # fmt: skip
    Case(
        Refusal("timeout not a number", PUSH, "DDPM_HF_HUB_TIMEOUT must be a positive number of seconds, got 'soon'"),
        env={"DDPM_HF_HUB_TIMEOUT": "soon"},
    ),  # fmt: skip
    Case(Refusal("revision a commit id", [*PUSH, "--revision", "0" * 40], r"revision \(--revision\) must be a branch")),
    Case(Refusal("revision a tag ref", [*PUSH, "--revision", "refs/tags/v1"], r"must be a branch name or a pull req")),
    Case(Refusal("empty revision", [*PUSH, "--revision", ""], r"revision \(--revision\) must be a branch name")),
    # ---- the token and the right to write: refused at once, before any upload ----------------------------------
    Case(
        Refusal(
            "wrong token",
            PUSH,
            rf"The Hub at {ENDPOINT} refused the Hugging Face token in HF_TOKEN: it is "
            r"invalid or expired \(401\): create a token with write access at .*/settings/tokens and set HF_TOKEN",
        ),
        env={"HF_TOKEN": "hf_not_a_valid_token"},
    ),  # fmt: skip
    Case(
        Refusal("read-only token", PUSH, r"token in HF_TOKEN \(user 'alice'\) is read-only: create a token with write"),
        env={"HF_TOKEN": READ_TOKEN},
    ),
    Case(
        Refusal(
            "namespace without rights",
            ["push", "{folder}", "--repo-id", "bob/ddpm-tiny"],
            r"User 'alice' may not write to bob/ddpm-tiny on .*\(403 Forbidden: .*\): push to a namespace you can",
        ),
    ),  # fmt: skip
    Case(
        Refusal("someone else's existing repo", PUSH, r"User 'bob' may not write to alice/ddpm-tiny .*\(403 Forbidden"),
        env={"HF_TOKEN": BOB_TOKEN},
        existing=("alice/ddpm-tiny",),
    ),
    # ---- a Hub that cannot be reached, never answers or refuses ------------------------------------------------
    Case(
        Refusal(
            "connection refused",
            PUSH,
            rf"Checking the Hugging Face token failed: the Hub at {ENDPOINT} could not "
            rf"be reached \(.*Connection refused\)\. {UNCHANGED}",
        ),
        hub="down",
    ),  # fmt: skip
    Case(
        Refusal(
            "never answers",
            PUSH,
            rf"the Hub at {ENDPOINT} did not answer within 1 s \(DDPM_HF_HUB_TIMEOUT sets "
            rf"how long to wait\)\. {UNCHANGED}",
        ),
        hub="silent",
        env={"DDPM_HF_HUB_TIMEOUT": "1"},
    ),  # fmt: skip
    Case(
        Refusal("offline", PUSH, rf"failed: offline mode is on \(HF_HUB_OFFLINE=1; unset it .*{UNCHANGED}"),
        hub="offline",
    ),  # fmt: skip
    Case(
        Refusal(
            "pull request against a missing branch",
            [*PUSH, "--create-pr", "--revision", "experiment"],
            r"alice/ddpm-tiny has no branch or pull request 'experiment': create_pr \(--create-pr\) needs an",
        ),
    ),  # fmt: skip
    Case(
        Refusal(
            "missing pull request", [*PUSH, "--revision", "refs/pr/7"], "has no branch or pull request 'refs/pr/7'"
        ),
    ),
    Case(
        Refusal(
            "commit refused",
            PUSH,
            rf"Uploading to alice/ddpm-tiny failed: the Hub at {ENDPOINT} answered 413 "
            rf"Request Entity Too Large: Over the quota\. {UNCHANGED}",
        ),
        refusals={"commit": ServerRefusal(413, "Over the quota.")},
    ),  # fmt: skip
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A training output folder: the pipeline, a training summary and the sample grid."""
    folder = tmp_path_factory.mktemp("pristine") / "run"
    torch.manual_seed(0)
    pipeline = ddpm_hf.DDPMPipeline(ddpm_hf.create_unet("ddpm-tiny"), ddpm_hf.DDPMScheduler(num_train_timesteps=10))
    pipeline.save_pretrained(folder / "pipeline")
    (folder / "training_summary.json").write_text(json.dumps({"steps": 10, "final_loss": 0.5}))
    PIL.Image.new("RGB", (16, 16), (200, 30, 30)).save(folder / "samples.png")
    return folder


def new_commits(server: HubServer) -> list[str]:
    """The repos whose main branch holds more than the commit that created them."""
    repos = [Repository(path.parent) for path in (server.storage / "models").glob("*/*/settings.json")]
    return [str(repo.folder) for repo in repos if repo.commit(repo.resolve("main"))["summary"] != "initial commit"]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.row.name)
def test_push_refuses_bad_input_with_one_line_and_changes_nothing(case, pristine, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(pristine, work / "run")
    FOLDERS[case.folder](work / "run")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", case.hub == "offline")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    for name, value in {"HF_TOKEN": TOKEN, **case.env}.items():
        monkeypatch.delenv(name, raising=False) if value is None else monkeypatch.setenv(name, value)
    port = urlsplit(constants.ENDPOINT).port
    server = None
    if case.hub in ("up", "offline"):
        tokens, read_tokens = {TOKEN: "alice", BOB_TOKEN: "bob"}, {READ_TOKEN: "alice"}
        server = HubServer(tmp_path / "hub-storage", port, tokens, read_tokens=read_tokens).start()
        for repo_id in case.existing:
            HfApi(token=TOKEN).create_repo(repo_id)
        server.refusals.update(case.refusals)
    elif case.hub == "silent":
        server = SilentServer(port).start()
    disable_progress_bars()
    try:
        message = assert_refused(case.row, capsys, watched=work, folder=str(work / "run"))
    finally:
        enable_progress_bars()
        if server is not None:
            server.stop()
    for secret in (TOKEN, BOB_TOKEN, READ_TOKEN, "hf_not_a_valid_token"):
        assert secret not in message
    if isinstance(server, HubServer):
        assert not new_commits(server) and not server.unhandled and not server.failures
