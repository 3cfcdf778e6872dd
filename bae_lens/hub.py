"""Upload a saved SAE folder to the Hugging Face hub, laid out as SAELens loads it.

The folder goes to ``<repo_id>/<path_in_repo>/`` (default ``path_in_repo``: the SAE's
hook name), so anyone with the package registered loads it back with
``SAE.from_pretrained(release=repo_id, sae_id=path_in_repo)`` (SAELens treats a release
it does not list as a hub repository and ``sae_id`` as the folder in it). Only the files
of a saved run are sent (:data:`UPLOADED_FILES`); the folder must pass the checked
loader's tests first. The token comes from the environment (``HF_TOKEN`` or
``HUGGING_FACE_HUB_TOKEN``) and is never printed or logged; ``HF_ENDPOINT`` points at
another hub as huggingface_hub reads it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from bae_lens.io import check_architecture_claim, check_sae_weights, read_sae_config

logger = logging.getLogger(__name__)

TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
"""Environment variables the token is read from, first set wins."""
UPLOADED_FILES = [
    "cfg.json",
    "sae_weights.safetensors",
    "sparsity.safetensors",
    "runner_cfg.json",
    "training_log.jsonl",
    "eval.json",
    "eval.md",
    "README.md",
    "*.png",
]
"""Patterns of the files sent (huggingface_hub ``allow_patterns``)."""
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def hub_token() -> tuple[str, str]:
    """(variable name, token) from the environment; ValueError naming the variables."""
    for name in TOKEN_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    raise ValueError(
        f"no hub token: set ${TOKEN_VARIABLES[0]} (or ${TOKEN_VARIABLES[1]}) to a token with "
        "write access"
    )


def check_upload(folder: str | Path, repo_id: str, path_in_repo: str | None = None) -> str:
    """The folder is a saved SAE and ``repo_id`` is ``owner/name``; returns the path in the
    repository it would go to. Raises ValueError (FileNotFoundError for a missing folder)."""
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise ValueError(f"--repo-id {repo_id}: give the hub repository as OWNER/NAME")
    cfg = read_sae_config(folder)
    check_architecture_claim(folder, cfg)
    check_sae_weights(folder, cfg)
    where = (
        path_in_repo if path_in_repo is not None else (cfg.get("metadata") or {}).get("hook_name")
    )
    if not where:
        raise ValueError(
            f"--path-in-repo (not given): {str(folder)!r}'s cfg.json names no hook to use; "
            "give the folder inside the repository"
        )
    parts = where.strip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"--path-in-repo {where}: not a relative folder path")
    return "/".join(parts)


def upload_sae(
    folder: str | Path,
    repo_id: str,
    *,
    path_in_repo: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload ``folder``'s run files into
    ``path_in_repo``; returns the commit URL."""
    where = check_upload(folder, repo_id, path_in_repo)
    variable, token = hub_token()
    api: Any = HfApi(token=token)
    logger.info("uploading %s to %s/%s (token from $%s)", folder, repo_id, where, variable)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            path_in_repo=where,
            allow_patterns=UPLOADED_FILES,
            commit_message=commit_message or f"Upload SAE {where} (bae_lens)",
        )
    except OSError as err:  # huggingface_hub's HTTP errors are OSErrors
        first = (str(err).splitlines() or [""])[0].replace(token, "<token>")
        raise ValueError(
            f"--repo-id {repo_id}: the hub refused the upload or could not be reached "
            f"({type(err).__name__}: {first}); the token came from ${variable}"
        ) from None
    return str(getattr(info, "commit_url", info))
