"""Hub base models on a cache claim shared by the trainers and servers of a namespace: the first pod downloads
them, every later pod loads them from the claim without a single request to the Hub.

Two writers never interleave: the download runs under an exclusive `flock` on a per-repository lock file on the
claim (the kernel releases it when a pod dies, so it cannot go stale; NFS, CephFS, EFS and Filestore pass flock
through), and a second pod waits for the first, then finds the model complete. "Complete" is a marker file
written only after every file is in place, naming the commit the files belong to; readers trust only the marker.
Like vLLM, only the weights in one format (safetensors when the repository has them) plus config and tokenizer
files are fetched, not every file of the repository.

A branch such as `main` is resolved once per cache and then kept (reproducible runs, no Hub traffic); pin a
`revision` commit to choose, or delete the marker to move on. Used by both images (huggingface_hub is imported
only here and only when a cache is mounted).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from .api.runtime import ENV_MODEL_CACHE

# "*.spm": the sentencepiece files of translation models (opus-mt) that dataset.augmentation may name.
CONFIG_PATTERNS = ("*.json", "*.model", "*.spm", "*.txt", "*.jinja", "*.tiktoken", "tokenizer*")
MARKERS_DIR = "kubetune/models"
LOCKS_DIR = "kubetune/locks"


def cache_root() -> Path | None:
    """The mounted shared cache (its HF_HOME), or None when the pod has none."""
    configured = os.environ.get(ENV_MODEL_CACHE)
    return Path(configured) if configured else None


def _key(repo: str) -> str:
    return repo.replace("/", "--")


def marker_path(root: Path, repo: str, revision: str | None) -> Path:
    return root / MARKERS_DIR / f"{_key(repo)}@{_key(revision or 'default')}.json"


def cached_commit(root: Path, repo: str, revision: str | None) -> str | None:
    """The commit of `repo` complete in the cache for this requested revision, if any."""
    try:
        recorded = json.loads(marker_path(root, repo, revision).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    commit = recorded.get("commit") if isinstance(recorded, dict) else None
    return commit if isinstance(commit, str) and commit else None


def ensure_cached(root: Path, repo: str, revision: str | None, token: str | None, trust_remote_code: bool) -> str:
    """The commit of `repo` whose files are complete in the cache at `root`, downloading them first (under the
    repository's lock) when no pod has yet. Hub errors propagate as raised (the caller retries transient ones)."""
    found = cached_commit(root, repo, revision)
    if found is not None:
        return found
    lock = root / LOCKS_DIR / f"{_key(repo)}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a+", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # blocks while another pod downloads this repository
        try:
            found = cached_commit(root, repo, revision)  # the pod we waited for may have fetched it
            if found is not None:
                return found
            commit = _download(root, repo, revision, token, trust_remote_code)
            _write_marker(marker_path(root, repo, revision), {"repo": repo, "revision": revision, "commit": commit})
            return commit
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _download(root: Path, repo: str, revision: str | None, token: str | None, trust_remote_code: bool) -> str:
    from huggingface_hub import HfApi, snapshot_download

    info = HfApi(token=token).model_info(repo, revision=revision)
    files = [sibling.rfilename for sibling in info.siblings or []]
    weights = ["*.safetensors"] if any(name.endswith(".safetensors") for name in files) else ["*.bin", "*.pt"]
    patterns = [*CONFIG_PATTERNS, *weights, *(["*.py"] if trust_remote_code else [])]
    assert info.sha is not None
    snapshot_download(repo, revision=info.sha, token=token, allow_patterns=patterns, cache_dir=str(root / "hub"))
    return info.sha


def _write_marker(path: Path, payload: dict[str, str | None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path)
