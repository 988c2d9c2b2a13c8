"""Bring a Hugging Face repo's files into its shared cache, resuming partial downloads, checking every byte.

Files land in huggingface_hub's cache layout (`models--ORG--REPO/blobs/<etag>` with
`snapshots/<commit>/<file>` links), which llama.cpp's `-hf` and other tools share. huggingface_hub supplies
the repo listing, file metadata, HTTP session, token and lock; candor writes each blob itself through a
stable `<etag>.incomplete` file, because huggingface_hub 2.x discards a partial download when it fails,
and a multi-gigabyte pull must resume where it stopped. huggingface_hub checks only sizes: candor compares
each file with the hash the hub published before the blob and its snapshot path are named, so that no crash
leaves a name on wrong bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

# Public in huggingface_hub.utils, whose lazy facade mypy cannot see through: imported from their modules.
from huggingface_hub.utils._fixes import WeakFileLock
from huggingface_hub.utils._headers import build_hf_headers
from huggingface_hub.utils._http import hf_raise_for_status, http_stream_backoff

from candor import __version__
from candor.errors import CandorError, DownloadError, IntegrityError, ModelNotFound
from candor.identity import file_sha256
from candor.store.hf_select import HubFile
from candor.store.service import Store

logger = logging.getLogger(__name__)

REVISION = "main"
_ETAG = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # git object id or sha256
_COMMIT = re.compile(r"[0-9a-f]{40}")
_API_TIMEOUT = 30.0
_LINK_TRIES = 3  # fresh download links asked for when a CDN refuses an old one
_RETRIES = 5  # attempts in a row that receive nothing, before a download gives up (it resumes next time)
_PROGRESS_INTERVAL = 0.1  # seconds between progress reports while bytes flow


@dataclass(frozen=True)
class PullProgress:
    """One step of a pull: what is happening, to which file, and how many of its bytes are done."""

    status: str  # "pulling manifest", "downloading FILE", "verifying sha256", "success"...
    file: str | None = None  # path in the repo
    digest: str | None = None  # "sha256:<hex>" as the hub published it, when it did
    completed: int | None = None  # bytes of `file` on disk so far
    total: int | None = None  # bytes of `file` in all


# -- the hub ---------------------------------------------------------------------------------------------


def hub_endpoint() -> str:
    """The hub to pull from: HF_ENDPOINT as set now, else huggingface_hub's default."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, from HF_HUB_CACHE or HF_HOME as set now."""
    env = os.environ
    raw = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not raw and env.get("HF_HOME"):
        raw = os.path.join(env["HF_HOME"], "hub")
    return Path(os.path.expandvars(os.path.expanduser(raw or constants.HF_HUB_CACHE))).resolve()


def _hub_error(exc: Exception, repo: str, endpoint: str, what: str) -> CandorError:
    """Translate a huggingface_hub or network error into candor's, with the fix."""
    access = (
        f"{repo} is gated or private: accept its licence at {endpoint}/{repo} while logged in, create a "
        "read token (https://huggingface.co/settings/tokens), set HF_TOKEN to it and pull again"
    )
    if isinstance(exc, GatedRepoError):
        return DownloadError(access)
    if isinstance(exc, RepositoryNotFoundError):
        return ModelNotFound(
            f"no model repository {repo!r} on {endpoint}; check ORG/REPO as the hub's URL spells it (if the "
            "repo is private, set HF_TOKEN to a token that can read it)"
        )
    if isinstance(exc, (RevisionNotFoundError, RemoteEntryNotFoundError)):
        return ModelNotFound(
            f"{what} is not on {endpoint} (any more); pull again to see the repo as it is now"
        )
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code
        if status in (401, 403):
            return DownloadError(access)
        return DownloadError(f"{endpoint} answered HTTP {status} for {what}; try again later")
    if isinstance(exc, OfflineModeIsEnabled):
        return DownloadError("HF_HUB_OFFLINE is set, so nothing can be downloaded; unset it and pull again")
    if isinstance(exc, httpx2.TransportError):
        source = (
            "HF_ENDPOINT" if os.environ.get("HF_ENDPOINT") else "the default endpoint; HF_ENDPOINT changes it"
        )
        return DownloadError(
            f"cannot reach {endpoint} ({source}) for {what}: {exc or type(exc).__name__}; check your network "
            "connection and proxy settings (HTTPS_PROXY), then pull again: what was downloaded is kept and "
            "resumed"
        )
    if isinstance(exc, OSError):
        return DownloadError(
            f"cannot write {what} to {hub_cache_dir()}: {exc.strerror or exc}; free disk space (or set "
            "HF_HUB_CACHE to a larger disk) and pull again: the partial file is kept and resumed"
        )
    return DownloadError(f"pulling {what} from {endpoint} failed: {exc}")


@contextmanager
def _translated(repo: str, endpoint: str, what: str) -> Iterator[None]:
    try:
        yield
    except CandorError:
        raise
    except (httpx2.HTTPError, OSError) as exc:
        raise _hub_error(exc, repo, endpoint, what) from exc


def list_repo(repo: str, endpoint: str) -> tuple[str, list[HubFile]]:
    """The repo's current commit and files (with sizes and published hashes)."""
    with _translated(repo, endpoint, f"the file list of {repo}"):
        info = HfApi(endpoint=endpoint).model_info(repo, files_metadata=True, timeout=_API_TIMEOUT)
    if not info.sha or not _COMMIT.fullmatch(info.sha):
        raise DownloadError(
            f"{endpoint} gave no valid commit id for {repo} ({info.sha!r}); check that HF_ENDPOINT points "
            "at a Hugging Face Hub"
        )
    files = [
        HubFile(
            s.rfilename,
            s.lfs.size if s.lfs else s.size,
            s.lfs.sha256.lower() if s.lfs else None,
            s.blob_id,
        )
        for s in info.siblings or ()
    ]
    return info.sha, files


class Reporter:
    """Forward byte counts to the progress callback, at most every _PROGRESS_INTERVAL seconds."""

    def __init__(self, progress: Callable[[PullProgress], None] | None) -> None:
        self.progress = progress
        self._last = 0.0

    def status(self, status: str, file: HubFile | None = None, completed: int | None = None) -> None:
        """Report a step (always delivered)."""
        if self.progress is None:
            return
        if file is None:
            self.progress(PullProgress(status))
        else:
            self.progress(PullProgress(status, file.path, file.digest, completed, file.size))

    def bytes(self, file: HubFile, completed: int, *, force: bool = False) -> None:
        """Report download progress (throttled unless forced)."""
        now = time.monotonic()
        if force or now - self._last >= _PROGRESS_INTERVAL:
            self._last = now
            self.status(f"downloading {file.path}", file, completed)


def _link(blob: Path, pointer: Path) -> None:
    """Point `snapshots/<commit>/<file>` at its blob, as huggingface_hub does (a copy where links fail)."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    except FileExistsError:
        if os.path.realpath(pointer) != os.path.realpath(blob):
            raise
    except OSError:
        shutil.copyfile(blob, pointer)


def _safe_repo_path(path: str) -> bool:
    """Whether a path from the hub's listing stays inside a snapshot folder."""
    parts = path.split("/")
    return (
        0 < len(path) <= 1024
        and "\\" not in path
        and "\0" not in path
        and all(p not in ("", ".", "..") for p in parts)
    )


def _expected_sha256(file: HubFile, etag: str, *, gguf: bool) -> str | None:
    """The sha256 a file must have: the hub's LFS hash, else (for a GGUF) an ETag that is a sha256."""
    if file.sha256 is None and gguf and re.fullmatch(r"[0-9a-f]{64}", etag):
        return etag
    return file.sha256


def _sha256_prefix(path: Path, length: int) -> hashlib._Hash:
    """A sha256 fed with the first `length` bytes of a file."""
    digest = hashlib.sha256()
    if length <= 0:
        return digest
    with path.open("rb") as file:
        while length > 0 and (block := file.read(min(1 << 20, length))):
            digest.update(block)
            length -= len(block)
    return digest


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # git's object id
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class Fetcher:
    """Bring a repo's files at one commit into the HF cache, each checked against its published hash."""

    def __init__(self, store: Store, repo: str, commit: str, endpoint: str, report: Reporter) -> None:
        self.store, self.repo, self.commit, self.endpoint, self.report = store, repo, commit, endpoint, report
        self.cache = hub_cache_dir()
        self.folder_name = "models--" + repo.replace("/", "--")
        self.storage = self.cache / self.folder_name
        self.snapshot = self.storage / "snapshots" / commit

    def fetch(self, file: HubFile, *, gguf: bool) -> Path:
        """The file's snapshot path, checked against the hub's hash (a bad cached copy is refetched)."""
        if not _safe_repo_path(file.path):
            raise DownloadError(
                f"{self.endpoint} listed a file named {file.path!r} in {self.repo}, which cannot be a "
                "path in the cache; check that HF_ENDPOINT is a Hugging Face Hub you trust"
            )
        pointer = self.snapshot / PurePosixPath(file.path)
        cached = pointer.is_file()
        with _translated(self.repo, self.endpoint, file.path):
            if not cached:
                self._download(file, pointer, gguf=gguf)
            else:
                self.report.status(f"using cached {file.path}", file, file.size)
            problem = self._verify(file, pointer, gguf=gguf)
            if problem and cached:
                logger.warning(
                    "%s in the Hugging Face cache is damaged (%s); downloading it again", pointer, problem
                )
                self._discard(pointer)
                self._download(file, pointer, gguf=gguf)
                problem = self._verify(file, pointer, gguf=gguf)
        if problem:
            self._discard(pointer)
            raise self._mismatch(file, problem)
        return pointer

    def _mismatch(self, file: HubFile, problem: str) -> IntegrityError:
        return IntegrityError(
            f"{file.path} from {self.repo} does not match the hash the hub published ({problem}); the "
            "damaged file was removed from the cache: pull again to download it afresh"
        )

    def _download(self, file: HubFile, pointer: Path, *, gguf: bool) -> None:
        """Bring the file's blob into the cache and link its snapshot path to it.

        The blob and the snapshot path get their names only once the content matches the published hash,
        so that a crash at any point never leaves a name (ours, or one llama.cpp's -hf reads) on wrong bytes.
        """
        url = hf_hub_url(self.repo, file.path, revision=self.commit, endpoint=self.endpoint)
        for attempt in range(1, _LINK_TRIES + 1):
            headers = build_hf_headers(library_name="candor", library_version=__version__)
            meta = get_hf_file_metadata(url, headers=headers, endpoint=self.endpoint, retry_on_errors=True)
            etag = meta.etag or ""
            if not _ETAG.fullmatch(etag):  # it becomes a file name: a hash, nothing else
                raise DownloadError(
                    f"{self.endpoint} sent no usable ETag for {file.path} ({etag!r}); check that HF_ENDPOINT "
                    "is a Hugging Face Hub"
                )
            size = meta.size if meta.size is not None else file.size
            location = meta.location
            off_hub = urlsplit(location)[:2] != urlsplit(url)[:2]
            if off_hub:
                headers.pop("authorization", None)  # a signed CDN URL: the token stays with the hub
            blob = self.storage / "blobs" / etag
            lock = self.cache / ".locks" / self.folder_name / f"{etag}.lock"
            for folder in (lock.parent, blob.parent, pointer.parent):  # as huggingface_hub lays them out
                folder.mkdir(parents=True, exist_ok=True)
            with WeakFileLock(lock):
                if blob.is_file() and (problem := self._verify(file, blob, gguf=gguf)):
                    # Put there by another tool, or by a crash of an older candor: never link wrong bytes.
                    logger.warning(
                        "%s in the Hugging Face cache is damaged (%s); downloading it again", blob, problem
                    )
                    blob.unlink()
                if not blob.is_file():
                    partial = blob.with_name(blob.name + ".incomplete")
                    try:
                        digest = self._stream(location, headers, partial, file, size)
                    except HfHubHTTPError as exc:
                        # A signed CDN link expires: ask the hub for a fresh one and go on from where we are.
                        if off_hub and exc.response.status_code in (401, 403) and attempt < _LINK_TRIES:
                            logger.warning(
                                "the download link of %s was refused; asking for a new one", file.path
                            )
                            continue
                        raise
                    if problem := self._check_download(file, partial, etag, digest, gguf=gguf):
                        partial.unlink()
                        raise self._mismatch(file, problem)
                    os.replace(partial, blob)
                else:
                    self.report.bytes(file, blob.stat().st_size, force=True)
                _link(blob, pointer)
            break
        refs = self.storage / "refs" / REVISION
        refs.parent.mkdir(parents=True, exist_ok=True)
        if not refs.is_file() or refs.read_text() != self.commit:
            tmp = refs.with_name(f"{REVISION}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_text(self.commit)
            os.replace(tmp, refs)

    def _stream(
        self, url: str, headers: dict[str, str], partial: Path, file: HubFile, size: int | None
    ) -> str:
        """GET into `partial`, resuming from what it holds; retry while bytes keep coming.

        Returns the sha256 of the whole file, computed as the bytes arrive (after re-reading what an earlier
        attempt left), so that the file is checked before it gets a name.
        """
        idle = 0
        digest, hashed = hashlib.sha256(), 0
        while True:
            have = partial.stat().st_size if partial.exists() else 0
            if size is not None and have > size:
                partial.unlink()
                have = 0
            if hashed != have:  # resuming: the hash starts with what an earlier attempt left on disk
                digest, hashed = _sha256_prefix(partial, have), have
            if size is not None and have == size:
                self.report.bytes(file, have, force=True)
                return digest.hexdigest()
            request = {**headers, "Accept-Encoding": "identity"}
            if have:
                request["Range"] = f"bytes={have}-"
            received = 0
            try:
                with http_stream_backoff(
                    "GET",
                    url,
                    headers=request,
                    timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
                    retry_on_exceptions=(),
                    retry_on_status_codes=(408, 429),
                ) as response:
                    hf_raise_for_status(response)
                    if have and response.status_code != 206:
                        have = 0  # the server ignored the range: start over
                        digest, hashed = hashlib.sha256(), 0
                    self.report.bytes(file, have, force=True)
                    with partial.open("ab" if have else "wb") as out:
                        for chunk in response.iter_bytes():
                            out.write(chunk)
                            digest.update(chunk)
                            hashed += len(chunk)
                            received += len(chunk)
                            self.report.bytes(file, have + received)
            except (httpx2.TransportError, httpx2.DecodingError) as exc:
                if isinstance(exc, httpx2.ProxyError):
                    raise
                idle = 0 if received else idle + 1
                if idle >= _RETRIES:
                    raise
                logger.warning("download of %s interrupted (%s); resuming", file.path, exc)
                time.sleep(0 if received else min(8.0, 0.5 * 2**idle))
                continue
            if size is None:
                self.report.bytes(file, have + received, force=True)
                return digest.hexdigest()
            if not received:
                idle += 1
                if idle >= _RETRIES:
                    raise DownloadError(
                        f"{self.endpoint} stopped sending {file.path} at {have} of {size} bytes; pull again "
                        "to resume"
                    )

    def _check_download(
        self, file: HubFile, partial: Path, etag: str, sha256: str, *, gguf: bool
    ) -> str | None:
        """None when a finished download matches the published hash; else what differs."""
        expected = _expected_sha256(file, etag, gguf=gguf)
        if expected is not None:
            self.report.status("verifying sha256", file, file.size)
            return None if sha256 == expected else f"sha256 expected {expected}, got {sha256}"
        if file.blob_id is not None:
            got = _git_blob_sha1(partial)
            return None if got == file.blob_id else f"git object id expected {file.blob_id}, got {got}"
        if gguf:
            return "the hub published no sha256 for it"
        return None

    def _verify(self, file: HubFile, path: Path, *, gguf: bool) -> str | None:
        """None when the content matches the published hash; else what differs."""
        expected = _expected_sha256(file, Path(os.path.realpath(path)).name, gguf=gguf)
        if expected is not None:
            self.report.status("verifying sha256", file, file.size)
            got = file_sha256(path, self.store.settings.cache_dir)
            return None if got == expected else f"sha256 expected {expected}, got {got}"
        if file.blob_id is not None:
            got = _git_blob_sha1(path)
            return None if got == file.blob_id else f"git object id expected {file.blob_id}, got {got}"
        if gguf:
            return "the hub published no sha256 for it"
        return None

    def _discard(self, pointer: Path) -> None:
        """Remove a file's snapshot link and blob, so that the next pull downloads it again."""
        blob = Path(os.path.realpath(pointer))
        for path in {pointer, blob}:
            with suppress(FileNotFoundError):
                path.unlink()
