"""Optional upload of the finished adapter folder to the Hugging Face Hub (`output.hub`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from kubetune.api import OutputSpec
from kubetune.api.runtime import ENV_HF_PUSH_TOKEN

from .errors import TrainerFailure
from .retries import with_retries_or

log = logging.getLogger(__name__)


def push_adapter(adapter_dir: Path, output: OutputSpec) -> str | None:
    """Create the repo if needed and upload the folder; returns the repo id, or None when no push is asked."""
    if output.hub is None:
        return None
    from huggingface_hub import HfApi

    # The push's own write token (output.hub.tokenSecretRef), never the base model's read token in HF_TOKEN.
    token = os.environ.get(ENV_HF_PUSH_TOKEN)
    if not token:
        raise TrainerFailure(f"output.hub: no Hub token in {ENV_HF_PUSH_TOKEN} (from output.hub.tokenSecretRef)")
    api = HfApi(token=token)
    hub = output.hub

    def push() -> None:
        api.create_repo(hub.repo, private=hub.private, exist_ok=True)
        api.upload_folder(
            folder_path=str(adapter_dir),
            repo_id=hub.repo,
            commit_message="kubetune adapter",
            ignore_patterns=["training_args.bin"],  # a pickle (runs code when loaded) that older runs left here
        )

    with_retries_or(  # hub errors come in many types; the token is never part of their message
        f"output.hub: pushing to {hub.repo!r}",
        push,
        lambda error: TrainerFailure(f"output.hub: pushing to {hub.repo!r} failed: {type(error).__name__}: {error}"),
    )
    log.info("pushed the adapter to the Hub repository %s", output.hub.repo)
    return output.hub.repo
