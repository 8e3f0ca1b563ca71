"""A small Hugging Face Hub on loopback, for the tests: the real `huggingface_hub` client pushes to it and downloads
from it over real HTTP.

It implements only what the client calls to create a repo, commit to it (regular files inline in the NDJSON commit
payload, LFS files through the LFS batch API, a presigned-style upload URL and the verify call), create a branch, and
download (repo info at a revision, the file tree, `resolve` with the headers the client checks), plus the metadata
check of `README.md` that `create_commit` asks for. Storage is on disk and git-like: per repo a `settings.json`,
`refs.json` (branches and pull-request refs → commit), one JSON file per commit (its parent, message and the tree of
path → sha256, size, LFS or not) and the file contents under `objects/` by sha256.

Every request is recorded; `refusals` makes a route answer a given error instead (a Hub that refuses a commit). A
request the server does not handle is recorded in `unhandled` and answered 404; a failure of the server itself is
recorded in `failures` and answered 400 (never 5xx: the client would retry for half a minute). Tests assert both
lists are empty at the end.

Writes need `Authorization: Bearer <token>` with one of the server's tokens (401 without or with an unknown one), a
token with write access (read-only tokens get 403), to a namespace the token's user owns or is a member of (403
otherwise). Private repos are invisible to anyone else (401 with `X-Error-Code: RepoNotFound`, as the Hub answers).
`whoami` reports the token's role (read or write) and `auth-check/write` the right to write to a repo, as the Hub does.

`SilentServer` is the other kind of Hub: one that accepts connections and never answers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

# What the Hub writes in the first commit of a new repo (abridged).
GITATTRIBUTES = "".join(
    f"*.{suffix} filter=lfs diff=lfs merge=lfs -text\n"
    for suffix in ("bin", "ckpt", "npz", "pkl", "png", "pt", "pth", "safetensors")
)
LFS_SUFFIXES = (".bin", ".ckpt", ".npz", ".pkl", ".png", ".pt", ".pth", ".safetensors")
LFS_MIN_SIZE = 10 * 1024 * 1024  # larger files go through LFS whatever their name
REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
SEGMENT = r"[^/]+"
# The pipeline tags the metadata check accepts (a few of the Hub's).
PIPELINE_TAGS = {"unconditional-image-generation", "text-to-image", "image-to-image", "image-classification"}


class HubError(Exception):
    """An error answered to the client: a 4xx status, a message, and the Hub's `X-Error-Code` when it has one."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    user: str | None  # the user of a valid token, if any
    authorization: str | None  # the raw header


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob, which the client compares to its local file to skip unchanged ones."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def check_card_metadata(content: str) -> list[str]:
    """The errors the Hub's metadata check would find in a README: the YAML block parses to a mapping, the known
    keys have the types the Hub expects, and `model-index` has the Hub's structure."""
    match = re.match(r"^---\r?\n(.*?)\r?\n---\r?\n", content, re.DOTALL)
    if match is None:
        return []  # a README without metadata is allowed (the Hub only warns)
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as error:
        return [f"Invalid YAML: {error}"]
    if data is None:
        return []
    if not isinstance(data, dict):
        return ["The metadata must be a YAML mapping."]
    errors = []
    for key in ("library_name", "pipeline_tag", "license"):
        if key in data and not isinstance(data[key], str):
            errors.append(f"'{key}' must be a string.")
    for key in ("tags", "datasets"):
        if key in data and not (isinstance(data[key], list) and all(isinstance(v, str) for v in data[key])):
            errors.append(f"'{key}' must be a list of strings.")
    if "pipeline_tag" in data and data["pipeline_tag"] not in PIPELINE_TAGS:
        errors.append(f"'pipeline_tag' {data['pipeline_tag']!r} is not a known pipeline tag.")
    if "model-index" in data:
        errors += _check_model_index(data["model-index"])
    return errors


def _check_model_index(model_index: Any) -> list[str]:
    if not isinstance(model_index, list) or not model_index:
        return ["'model-index' must be a non-empty list."]
    errors = []
    for model in model_index:
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append("Each 'model-index' entry needs a 'name'.")
            continue
        for result in model.get("results") or []:
            task, dataset = result.get("task") or {}, result.get("dataset") or {}
            if not isinstance(task.get("type"), str):
                errors.append("Each result needs 'task.type'.")
            if not (isinstance(dataset.get("type"), str) and isinstance(dataset.get("name"), str)):
                errors.append("Each result needs 'dataset.type' and 'dataset.name'.")
            for metric in result.get("metrics") or []:
                if not isinstance(metric.get("type"), str) or not isinstance(metric.get("value"), (int, float, str)):
                    errors.append("Each metric needs a 'type' and a number or string 'value'.")
    return errors


class Repository:
    """One model repository on disk (see the module docstring for the layout). Callers hold the server's lock."""

    def __init__(self, folder: Path):
        self.folder = folder

    # -- state ----------------------------------------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        return json.loads((self.folder / "settings.json").read_text())

    @property
    def refs(self) -> dict[str, str]:
        return json.loads((self.folder / "refs.json").read_text())

    def set_ref(self, name: str, commit: str) -> None:
        refs = self.refs
        refs[name] = commit
        (self.folder / "refs.json").write_text(json.dumps(refs, indent=2))

    def commit(self, sha: str) -> dict[str, Any]:
        return json.loads((self.folder / "commits" / f"{sha}.json").read_text())

    def object_path(self, sha256: str) -> Path:
        return self.folder / "objects" / sha256

    def has_object(self, sha256: str) -> bool:
        return self.object_path(sha256).is_file()

    def store_object(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        path = self.object_path(sha256)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{sha256}.{secrets.token_hex(4)}")
            temporary.write_bytes(content)
            temporary.replace(path)
        return sha256

    # -- revisions ------------------------------------------------------------------------------------------------

    def resolve(self, revision: str) -> str:
        """The commit of a branch, a pull-request ref (`refs/pr/N`) or a full commit id; 404 RevisionNotFound."""
        refs = self.refs
        if revision in refs:
            return refs[revision]
        if re.fullmatch(r"[0-9a-f]{40}", revision) and (self.folder / "commits" / f"{revision}.json").is_file():
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def tree(self, revision: str) -> tuple[str, dict[str, dict[str, Any]]]:
        sha = self.resolve(revision)
        return sha, self.commit(sha)["files"]

    def write_commit(self, parent: str | None, files: dict[str, dict[str, Any]], summary: str, description: str) -> str:
        record = {
            "parent": parent,
            "summary": summary,
            "description": description,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "files": files,
        }
        sha = hashlib.sha1(json.dumps(record, sort_keys=True).encode() + secrets.token_bytes(8)).hexdigest()
        (self.folder / "commits").mkdir(exist_ok=True)
        (self.folder / "commits" / f"{sha}.json").write_text(json.dumps(record, indent=2))
        return sha

    def file_entry(self, content: bytes, path: str) -> dict[str, Any]:
        """The tree entry of `content` at `path`, stored as LFS when the Hub would."""
        sha256 = self.store_object(content)
        return {"sha256": sha256, "size": len(content), "lfs": is_lfs_path(path, len(content), content[:512])}


def is_lfs_path(path: str, size: int, sample: bytes) -> bool:
    """Whether the Hub would store a file as LFS: by name (the .gitattributes patterns), size, or binary content."""
    return path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE or b"\0" in sample


class HubServer:
    """The Hub on `http://127.0.0.1:port`, storing repos under `storage`; `tokens` maps each valid token with write
    access to a user, `read_tokens` each read-only one."""

    def __init__(
        self,
        storage: Path,
        port: int,
        tokens: dict[str, str],
        organizations: dict[str, set[str]] | None = None,
        read_tokens: dict[str, str] | None = None,
    ):
        self.storage = Path(storage)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.tokens = dict(tokens)
        self.read_tokens = dict(read_tokens or {})
        self.organizations = organizations or {}
        self.requests: list[Recorded] = []
        self.unhandled: list[str] = []
        self.failures: list[str] = []
        self.validated_readmes: list[str] = []
        self.lfs_uploads: list[str] = []  # sha256 of each object uploaded through LFS
        self.refusals: dict[str, HubError] = {}  # route name ("commit", ...) → the error it answers instead
        self.lock = threading.RLock()
        self._upload_signatures: dict[str, tuple[str, str]] = {}  # signature → (repo, sha256)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def start(self) -> HubServer:
        server = self

        class Handler(_Handler):
            hub = server

        self.storage.mkdir(parents=True, exist_ok=True)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering: from now on connections are refused (idempotent)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._httpd = None

    # -- inspection, for the tests --------------------------------------------------------------------------------

    def repository(self, repo_id: str) -> Repository | None:
        folder = self.storage / "models" / repo_id
        return Repository(folder) if (folder / "settings.json").is_file() else None

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of `repo_id` at `revision`, path → content, as stored."""
        with self.lock:
            repo = self.repository(repo_id)
            _, tree = repo.tree(revision)
            return {path: repo.object_path(entry["sha256"]).read_bytes() for path, entry in tree.items()}

    def tree(self, repo_id: str, revision: str = "main") -> dict[str, dict[str, Any]]:
        with self.lock:
            return self.repository(repo_id).tree(revision)[1]

    def head(self, repo_id: str, revision: str = "main") -> str:
        with self.lock:
            return self.repository(repo_id).resolve(revision)

    def stored_bytes(self) -> list[tuple[Path, bytes]]:
        """Every file the server wrote, with its content (to look for what must never be stored)."""
        return [(path, path.read_bytes()) for path in sorted(self.storage.rglob("*")) if path.is_file()]

    # -- access ---------------------------------------------------------------------------------------------------

    def may_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (namespace == user or user in self.organizations.get(namespace, set()))

    def readable_repository(self, repo_id: str, user: str | None) -> Repository:
        repo = self.repository(repo_id)
        if repo is None or (repo.settings["private"] and not self.may_write(user, repo_id.split("/")[0])):
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def writable_repository(self, repo_id: str, user: str | None, can_write: bool = True) -> Repository:
        if user is None:
            raise HubError(401, "You must be authenticated to write to a repository.")
        repo = self.readable_repository(repo_id, user)
        if not can_write:
            raise HubError(403, "This token has read access only.")
        if not self.may_write(user, repo_id.split("/")[0]):
            raise HubError(403, f"You don't have the rights to write to {repo_id}.")
        return repo

    def new_upload_signature(self, repo_id: str, sha256: str) -> str:
        """A one-off permission to upload the object `sha256` of `repo_id`, like a presigned storage URL's."""
        signature = secrets.token_hex(16)
        self._upload_signatures[signature] = (repo_id, sha256)
        return signature

    def check_upload_signature(self, signature: str, repo_id: str, sha256: str) -> None:
        if self._upload_signatures.pop(signature, None) != (repo_id, sha256):
            raise HubError(403, "Invalid or expired upload signature.")


class _Handler(BaseHTTPRequestHandler):
    """Routes a request to the method of the first route whose method and path pattern match."""

    hub: HubServer
    protocol_version = "HTTP/1.0"  # one request per connection: no stale keep-alive connections across restarts

    routes: list[tuple[str, str, str]] = [
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", r"/api/whoami-v2", "whoami"),
        ("GET", r"/api/agent-harnesses", "agent_harnesses"),
        ("GET", rf"/api/models/{REPO}", "repo_info"),
        ("GET", rf"/api/models/{REPO}/auth-check(?P<write>/write)?", "auth_check"),
        ("GET", rf"/api/models/{REPO}/revision/(?P<revision>{SEGMENT})", "repo_info"),
        ("GET", rf"/api/models/{REPO}/tree/(?P<revision>{SEGMENT})(?:/(?P<path>.*))?", "list_tree"),
        ("POST", rf"/api/models/{REPO}/preupload/(?P<revision>{SEGMENT})", "preupload"),
        ("POST", rf"/api/models/{REPO}/commit/(?P<revision>{SEGMENT})", "commit"),
        ("POST", rf"/api/models/{REPO}/branch/(?P<branch>{SEGMENT})", "create_branch"),
        ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
        ("POST", rf"/{REPO}\.git/info/lfs/objects/verify", "lfs_verify"),
        ("PUT", rf"/lfs-upload/{REPO}/(?P<sha256>[0-9a-f]{{64}})", "lfs_upload"),
        ("GET", rf"/{REPO}/resolve/(?P<revision>{SEGMENT})/(?P<path>.+)", "resolve"),
        ("HEAD", rf"/{REPO}/resolve/(?P<revision>{SEGMENT})/(?P<path>.+)", "resolve"),
    ]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: requests are recorded in `hub.requests`, not printed."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        self.query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        authorization = self.headers.get("Authorization")
        token = authorization[len("Bearer ") :] if authorization and authorization.startswith("Bearer ") else None
        self.user = (self.hub.tokens.get(token) or self.hub.read_tokens.get(token)) if token else None
        self.can_write = token in self.hub.tokens
        self.hub.requests.append(Recorded(self.command, split.path, self.user, authorization))
        try:
            if token is not None and self.user is None:
                raise HubError(401, "Invalid credentials in Authorization header")
            for method, pattern, name in self.routes:
                match = re.fullmatch(pattern, split.path)
                if method == self.command and match:
                    if name in self.hub.refusals:
                        raise self.hub.refusals[name]
                    arguments = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    with self.hub.lock:
                        getattr(self, name)(**arguments)
                    return
            self.hub.unhandled.append(f"{self.command} {self.path}")
            raise HubError(404, f"The test Hub does not handle {self.command} {split.path}.")
        except HubError as error:
            self._error(error)
        except Exception as error:  # noqa: BLE001 - any failure of the server is answered 4xx and recorded
            self.hub.failures.append(f"{self.command} {self.path}: {type(error).__name__}: {error}")
            self._error(HubError(400, f"The test Hub failed: {type(error).__name__}: {error}"))

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self) -> Any:
        try:
            return json.loads(self._body() or b"null")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid JSON body: {error}") from error

    def _send(self, status: int, body: Any = b"", headers: dict[str, str] | None = None, length: int | None = None):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._send(error.status, {"error": error.message}, headers)

    # -- repositories ---------------------------------------------------------------------------------------------

    def whoami(self) -> None:
        if self.user is None:
            raise HubError(401, "Invalid user token.")
        orgs = [{"name": name} for name, members in self.hub.organizations.items() if self.user in members]
        access = {"role": "write" if self.can_write else "read"}
        self._send(200, {"type": "user", "name": self.user, "orgs": orgs, "auth": {"accessToken": access}})

    def auth_check(self, repo: str, write: str | None = None) -> None:
        if write:
            self.hub.writable_repository(repo, self.user, self.can_write)
        else:
            self.hub.readable_repository(repo, self.user)
        self._send(200, {})

    def agent_harnesses(self) -> None:
        """The registry of AI coding agents the client fetches once to label its user agent: none here."""
        self._send(200, {"standardEnvVars": [], "harnesses": {}})

    def create_repo(self) -> None:
        payload = self._json_body()
        if self.user is None:
            raise HubError(401, "You must be authenticated to create a repository.")
        if payload.get("type", "model") != "model":
            raise HubError(400, "The test Hub stores model repositories only.")
        namespace, name = payload.get("organization") or self.user, payload["name"]
        if not self.can_write:
            raise HubError(403, "This token has read access only.")
        if not self.hub.may_write(self.user, namespace):
            raise HubError(403, f"You don't have the rights to create a model under the namespace {namespace}.")
        repo_id = f"{namespace}/{name}"
        url = f"{self.hub.url}/{repo_id}"
        if self.hub.repository(repo_id) is not None:
            self._send(409, {"error": "You already created this model repo", "url": url})
            return
        folder = self.hub.storage / "models" / repo_id
        folder.mkdir(parents=True)
        private = payload.get("visibility") == "private" or payload.get("private") is True
        settings = {"private": private, "owner": self.user, "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
        (folder / "refs.json").write_text("{}")
        repo = Repository(folder)
        files = {".gitattributes": repo.file_entry(GITATTRIBUTES.encode(), ".gitattributes")}
        repo.set_ref("main", repo.write_commit(None, files, "initial commit", ""))
        (folder / "settings.json").write_text(json.dumps(settings, indent=2))  # last: the repo exists from here
        self._send(200, {"url": url, "name": repo_id, "id": secrets.token_hex(12)})

    def repo_info(self, repo: str, revision: str | None = None) -> None:
        repository = self.hub.readable_repository(repo, self.user)
        sha, files = repository.tree(revision or "main")
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
            "id": repo,
            "modelId": repo,
            "author": repo.split("/")[0],
            "sha": sha,
            "private": repository.settings["private"],
            "disabled": False,
            "gated": False,
            "lastModified": repository.commit(sha)["date"],
            "createdAt": repository.settings["created"],
            "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(files)],
        }
        if "README.md" in files:  # the Hub reports the card's metadata
            readme = repository.object_path(files["README.md"]["sha256"]).read_text(encoding="utf-8")
            match = re.match(r"^---\r?\n(.*?)\r?\n---\r?\n", readme, re.DOTALL)
            card_data = (yaml.safe_load(match.group(1)) if match else None) or {}
            info["cardData"] = card_data
            info["tags"] = list(card_data.get("tags") or [])
            for key in ("library_name", "pipeline_tag"):
                if key in card_data:
                    info[key] = card_data[key]
            if "model-index" in card_data:
                info["model-index"] = card_data["model-index"]
        self._send(200, info)

    def list_tree(self, repo: str, revision: str, path: str = "") -> None:
        repository = self.hub.readable_repository(repo, self.user)
        _, files = repository.tree(revision)
        recursive = self.query.get("recursive", "false").lower() == "true"
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        entries, folders = [], set()
        for name in sorted(files):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entries.append(self._tree_entry(repository, name, files[name]))
        entries += [
            {"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
            for f in sorted(folders)
        ]
        if prefix and not entries:
            raise HubError(404, f"{path} does not exist at {revision}", "EntryNotFound")
        self._send(200, entries)

    @staticmethod
    def _tree_entry(repository: Repository, path: str, entry: dict[str, Any]) -> dict[str, Any]:
        if entry["lfs"]:
            pointer = lfs_pointer(entry["sha256"], entry["size"])
            lfs = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": len(pointer)}
            return {"type": "file", "oid": git_blob_sha1(pointer), "size": entry["size"], "path": path, "lfs": lfs}
        content = repository.object_path(entry["sha256"]).read_bytes()
        return {"type": "file", "oid": git_blob_sha1(content), "size": entry["size"], "path": path}

    def create_branch(self, repo: str, branch: str) -> None:
        repository = self.hub.writable_repository(repo, self.user, self.can_write)
        payload = self._json_body() or {}
        if branch in repository.refs:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        repository.set_ref(branch, repository.resolve(payload.get("startingPoint") or "main"))
        self._send(200, {})

    # -- commits --------------------------------------------------------------------------------------------------

    def validate_yaml(self) -> None:
        payload = self._json_body()
        content = payload.get("content", "")
        errors = check_card_metadata(content)
        if errors:
            self._send(400, {"errors": [{"message": e} for e in errors], "warnings": []})
            return
        self.hub.validated_readmes.append(content)
        self._send(200, {"errors": [], "warnings": []})

    def _branch_to_write(self, repository: Repository, revision: str) -> str:
        if revision not in repository.refs:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return revision

    def preupload(self, repo: str, revision: str) -> None:
        repository = self.hub.writable_repository(repo, self.user, self.can_write)
        _, files = repository.tree(self._branch_to_write(repository, revision))
        answers = []
        for file in self._json_body()["files"]:
            sample = base64.b64decode(file["sample"])
            lfs = is_lfs_path(file["path"], file["size"], sample)
            existing = files.get(file["path"])
            oid = None
            if existing is not None and existing["lfs"] == lfs:
                oid = (
                    existing["sha256"]
                    if lfs
                    else git_blob_sha1(repository.object_path(existing["sha256"]).read_bytes())
                )
            answers.append(
                {"path": file["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        self._send(200, {"files": answers, "commitOid": repository.resolve(revision)})

    def commit(self, repo: str, revision: str) -> None:
        repository = self.hub.writable_repository(repo, self.user, self.can_write)
        branch = self._branch_to_write(repository, revision)
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header line.")
        header = lines[0]["value"]
        parent = repository.resolve(branch)
        files = dict(repository.commit(parent)["files"])
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "Regular files must be base64-encoded.")
                files[value["path"]] = repository.file_entry(base64.b64decode(value["content"]), value["path"])
            elif key == "lfsFile":
                if not repository.has_object(value["oid"]):
                    raise HubError(400, f"LFS object {value['oid']} of {value['path']} was never uploaded.")
                size = repository.object_path(value["oid"]).stat().st_size
                files[value["path"]] = {"sha256": value["oid"], "size": size, "lfs": True}
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                files = {p: e for p, e in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                raise HubError(400, f"The test Hub does not handle commit operations of kind {key!r}.")
        for path, entry in files.items():
            if entry["lfs"] is False and path.endswith(LFS_SUFFIXES):
                raise HubError(400, f"{path} must be uploaded through LFS (.gitattributes).")
        sha = repository.write_commit(parent, files, header.get("summary", ""), header.get("description", ""))
        answer = {"commitUrl": f"{self.hub.url}/{repo}/commit/{sha}", "commitOid": sha, "success": True}
        if self.query.get("create_pr") == "1":
            number = 1 + sum(name.startswith("refs/pr/") for name in repository.refs)
            repository.set_ref(f"refs/pr/{number}", sha)
            answer["pullRequestUrl"] = f"{self.hub.url}/{repo}/discussions/{number}"
        else:
            repository.set_ref(branch, sha)
        self._send(200, answer)

    # -- LFS ------------------------------------------------------------------------------------------------------

    def lfs_batch(self, repo: str) -> None:
        repository = self.hub.writable_repository(repo, self.user, self.can_write)
        payload = self._json_body()
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(400, "The test Hub handles basic LFS uploads only.")
        objects = []
        for item in payload["objects"]:
            answer: dict[str, Any] = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if not repository.has_object(item["oid"]):
                signature = self.hub.new_upload_signature(repo, item["oid"])
                answer["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs-upload/{repo}/{item['oid']}?X-Signature={signature}"},
                    "verify": {"href": f"{self.hub.url}/{repo}.git/info/lfs/objects/verify"},
                }
            objects.append(answer)
        self._send(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_upload(self, repo: str, sha256: str) -> None:
        # Like a presigned storage URL: no Authorization header, the signature in the URL is the permission.
        self.hub.check_upload_signature(self.query.get("X-Signature", ""), repo, sha256)
        content = self._body()
        if hashlib.sha256(content).hexdigest() != sha256:
            raise HubError(400, f"The uploaded content does not hash to {sha256}.")
        self.hub.repository(repo).store_object(content)
        self.hub.lfs_uploads.append(sha256)
        self._send(200, b"", {"ETag": f'"{hashlib.md5(content).hexdigest()}"'})

    def lfs_verify(self, repo: str) -> None:
        repository = self.hub.writable_repository(repo, self.user, self.can_write)
        payload = self._json_body()
        path = repository.object_path(payload["oid"])
        if not path.is_file() or path.stat().st_size != payload["size"]:
            raise HubError(404, f"LFS object {payload['oid']} not found.")
        self._send(200, {})

    # -- downloads ------------------------------------------------------------------------------------------------

    def resolve(self, repo: str, revision: str, path: str) -> None:
        repository = self.hub.readable_repository(repo, self.user)
        sha, files = repository.tree(revision)
        entry = files.get(path)
        if entry is None:  # the client caches the absence of a file under the commit it reads here
            headers = {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found", "X-Repo-Commit": sha}
            self._send(404, {"error": f"Entry not found: {path}"}, headers)
            return
        content_path = repository.object_path(entry["sha256"])
        headers = {"X-Repo-Commit": sha, "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            headers |= {"ETag": f'"{entry["sha256"]}"', "X-Linked-Etag": f'"{entry["sha256"]}"'}
            headers["X-Linked-Size"] = str(entry["size"])
        else:
            headers["ETag"] = f'"{git_blob_sha1(content_path.read_bytes())}"'
        body = b"" if self.command == "HEAD" else content_path.read_bytes()
        self._send(200, body, headers, length=entry["size"])


class SilentServer:
    """A Hub that hangs: it accepts every connection on `http://127.0.0.1:port` and never reads or answers."""

    def __init__(self, port: int):
        self.port = port
        self.connections: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def start(self) -> SilentServer:
        self._listener = socket.create_server(("127.0.0.1", self.port), backlog=64)  # SO_REUSEADDR on POSIX
        self._listener.settimeout(0.02)  # so that the accepting thread sees `stop`
        self._thread = threading.Thread(target=self._accept, name="silent-hub", daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                self.connections.append(self._listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    def stop(self) -> None:
        """Close every connection and stop listening (idempotent)."""
        if self._thread is not None:
            self._stopped.set()
            self._thread.join()
            self._listener.close()
            for connection in self.connections:
                connection.close()
            self._thread = None
