"""``bae-lens upload``: a saved SAE folder to the Hugging Face hub (:mod:`bae_lens.hub`)."""

from __future__ import annotations

import argparse

from bae_lens.cli.preflight import check_upload_args
from bae_lens.hub import TOKEN_VARIABLES, upload_sae


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``bae-lens upload``."""
    p.add_argument("sae", help="saved SAE folder (cfg.json + sae_weights.safetensors)")
    p.add_argument("--repo-id", required=True, help="hub repository OWNER/NAME (created if new)")
    p.add_argument(
        "--path-in-repo",
        default=None,
        help="folder inside the repository (default: the SAE's hook name); load back with "
        "SAE.from_pretrained(release=REPO_ID, sae_id=PATH_IN_REPO)",
    )
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--commit-message", default=None)
    p.epilog = (
        f"The token is read from ${TOKEN_VARIABLES[0]} or ${TOKEN_VARIABLES[1]} and never "
        "printed; HF_ENDPOINT selects another hub."
    )


def run(args: argparse.Namespace) -> int:
    """Check the folder, then upload it."""
    where = check_upload_args(args)
    url = upload_sae(
        args.sae,
        args.repo_id,
        path_in_repo=where,
        private=args.private,
        commit_message=args.commit_message,
    )
    print(f"uploaded {args.sae} to {args.repo_id}/{where}: {url}")
    print(f'load it with SAE.from_pretrained(release="{args.repo_id}", sae_id="{where}")')
    return 0
