"""Pre-flight: what every subcommand checks before its first expensive step.

Each ``check_<command>(args)`` runs at the top of that subcommand's ``run``, before any
model load or corpus read, and raises ValueError (exit code 2, see :mod:`bae_lens.cli`)
with one line ``--option value: what is wrong and what is allowed``:

- output paths: not an existing file (or folder, for a file output), inside a writable
  folder; a folder already holding a run is refused unless the command resumes it or
  ``--overwrite`` is given (which writes over files of the same name and deletes nothing);
- inputs: the dataset (the embedded corpus prepared, a local path present and readable as
  UTF-8 text; hub names cannot be checked offline and pass), hook names against the model
  config where that is cheap (the embedded model: its ``config.json`` and a forward pass
  on the meta device, about a second), saved dictionaries (``cfg.json`` + weights whose
  shapes fit it);
- the judge endpoint: one ``GET <base_url>/models`` with a short timeout; an error names
  the environment variable holding the key, never the key;
- disk space for an activation cache against its estimated size (rows * d_in * 2 bytes);
- ``--device`` (``auto`` resolved to the device in force) and ``--dtype``, the same options
  and policy in every subcommand that runs a model or an SAE (:func:`add_runtime_arguments`).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from bae_lens.runtime import DEVICE_CHOICES, DTYPES, resolve_device, resolve_dtype

JUDGE_TIMEOUT_S = 5.0
"""Seconds the judge endpoint has to answer the pre-flight request."""


def add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    """``--device``, ``--dtype`` and ``--threads``, the same for every subcommand that runs
    a model or an SAE (:mod:`bae_lens.runtime` holds the policy)."""
    p.add_argument(
        "--device",
        default="auto",
        help=f"torch device: {DEVICE_CHOICES}; auto: cuda if available, else mps if "
        "available, else cpu",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        help=f"dtype of the SAEs and the model: {', '.join(DTYPES)}; a BAE in half precision "
        "still computes its pre-activation, and so its 0/1 code, in float32",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1 on machines with <= 2 cores, else torch's choice)",
    )


def add_overwrite_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an output folder that already holds a run (files of the same name "
        "are replaced; nothing is deleted)",
    )


# --------------------------------------------------------------------------- paths


def _nearest_existing(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists():
        path = path.parent
    return path


def check_writable(option: str, path: str | Path) -> None:
    """The folder ``path`` would be created in exists as a folder and is writable."""
    anchor = _nearest_existing(Path(path))
    if anchor != Path(path).expanduser().absolute() and not anchor.is_dir():
        raise ValueError(f"{option} {path}: {str(anchor)!r} is a file, so nothing can go under it")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: the folder {str(anchor)!r} is not writable")


def check_output_folder(
    option: str, path: str | Path, *, overwrite: bool = False, resumes: bool = False
) -> None:
    """``path`` is a folder to write a run to: not a file, writable, and empty or absent
    unless the command resumes it (``resumes``) or the user said ``--overwrite``."""
    p = Path(path).expanduser()
    if p.is_file():
        raise ValueError(f"{option} {path}: is an existing file; give a folder path")
    check_writable(option, p)
    if p.is_dir() and not (overwrite or resumes):
        held = sorted(child.name for child in p.iterdir())
        if held:
            shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
            raise ValueError(
                f"{option} {path}: the folder already holds {shown}; pass --overwrite to "
                "write over it, or give a new folder"
            )


def check_output_file(option: str, path: str | Path) -> None:
    """``path`` is a file to write: not an existing folder, in a writable folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{option} {path}: is an existing folder; give a file path")
    check_writable(option, p.parent if str(p.parent) else Path("."))


def check_input_file(option: str, path: str | Path | None) -> None:
    if path is not None and not Path(path).expanduser().is_file():
        raise ValueError(f"{option} {path}: no such file")


def check_disk_space(option: str, folder: str | Path, needed_bytes: int, what: str) -> None:
    """The file system holding ``folder`` has ``needed_bytes`` free (``shutil.disk_usage``)."""
    free = shutil.disk_usage(_nearest_existing(Path(folder))).free
    if needed_bytes > free:
        raise ValueError(
            f"{option} {folder}: the activation cache needs about {needed_bytes / 1e9:.2f} GB "
            f"({what}) but only {free / 1e9:.2f} GB is free there; free space, lower "
            "--training-tokens or point --cache-dir at another disk"
        )


# --------------------------------------------------------------------------- inputs


def check_dataset(option: str, dataset: str, splits: Iterable[str]) -> None:
    """``dataset`` can be read for each split: the embedded corpus is prepared, a local
    path exists and holds UTF-8 text; any other name is a hub dataset (unchecked offline)."""
    from bae_lens import corpus

    for split in splits:
        if dataset == "embedded":
            if split not in corpus.SPLITS:
                raise ValueError(
                    f"{option} embedded: the embedded corpus has splits {list(corpus.SPLITS)}, "
                    "not a whole-file evaluation set; give a local file"
                )
            path = corpus.embedded_corpus_dir() / f"{split}.jsonl"
            if not path.is_file() or path.stat().st_size == 0:
                raise ValueError(
                    f"{option} embedded: the corpus is not prepared ({str(path)!r} is missing "
                    f"or empty); {corpus.FETCH_HINT}"
                )
            continue
        try:
            corpus.local_data_files(dataset, split)
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"{option} {dataset}: {err}") from None


@functools.lru_cache(maxsize=4)
def model_hook_shapes(model_name: str | None) -> dict[str, tuple[int, ...]] | None:
    """Every hook of the named model and its activation shape on a ``[1, 2]`` batch, when
    the config is cheap to get (the embedded model with its cache built); else None."""
    from bae_lens import models

    if model_name is not None and not models.is_embedded_name(model_name):
        return None
    cfg = models.embedded_config()
    return None if cfg is None else models.hook_shapes(cfg)


def _n_layers(shapes: dict[str, tuple[int, ...]]) -> int:
    blocks = (int(m.group(1)) for name in shapes if (m := re.match(r"blocks\.(\d+)\.", name)))
    return 1 + max(blocks, default=-1)


def check_hooks(
    option: str, hooks: Iterable[str], shapes: dict[str, tuple[int, ...]] | None
) -> None:
    """Each hook is a TransformerLens hook of the model (``shapes`` from
    :func:`model_hook_shapes`; None: the model is not checked), before the model loads;
    once it has loaded, :func:`bae_lens.hidden_states.check_hooks` says the same."""
    from bae_lens.hidden_states import HOOK_EXAMPLES

    if shapes is None:
        return
    n_layers = _n_layers(shapes)
    for hook in hooks:
        if hook in shapes:
            continue
        block = re.match(r"blocks\.(\d+)\.(.*)", hook)
        if block and int(block.group(1)) >= n_layers and f"blocks.0.{block.group(2)}" in shapes:
            raise ValueError(f"{option} {hook}: the model has blocks 0..{n_layers - 1}")
        raise ValueError(
            f"{option} {hook}: not a hook of the model; {HOOK_EXAMPLES} (N < {n_layers})"
        )


def check_layers(option: str, layers: list[int], model_name: str | None) -> None:
    """Layers (``blocks.N``) the model has, where its config is cheap to get."""
    shapes = model_hook_shapes(model_name)
    if shapes is None:
        return
    n_layers = _n_layers(shapes)
    if any(not 0 <= layer < n_layers for layer in layers):
        typed = ",".join(str(layer) for layer in layers)
        raise ValueError(f"{option} {typed}: the model has layers 0..{n_layers - 1}")


def check_sae_folders(
    option: str, folders: Iterable[str | Path], *, pretrained: bool = False
) -> None:
    """Each folder is a saved dictionary: ``cfg.json`` valid, its architecture the one
    that wrote the folder, and weights that fit it.
    ``pretrained``: a SAELens pretrained SAE named ``release/sae_id`` passes too (its id
    checked against SAELens's directory; the hub is not asked)."""
    from bae_lens.io import (
        check_architecture_claim,
        check_sae_weights,
        pretrained_ref,
        read_sae_config,
    )

    for folder in folders:
        try:
            if pretrained and pretrained_ref(str(folder)) is not None:
                continue
            cfg = read_sae_config(folder)
            check_architecture_claim(folder, cfg)
            check_sae_weights(folder, cfg)
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"{option} {folder}: not a usable saved dictionary: {err}") from None


def check_judge(base_url: str, model: str, timeout: float = JUDGE_TIMEOUT_S) -> None:
    """One cheap request (``GET <base_url>/models``): the endpoint answers and takes the
    key. Errors name the environment variable that held the key, never the key."""
    from bae_lens.comsem.judge import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL

    if not base_url:
        raise ValueError(f"--judge-base-url '': not set; give it or set ${ENV_BASE_URL}")
    if not model:
        raise ValueError(f"--judge-model '': not set; give it or set ${ENV_MODEL}")
    key_var = next((v for v in (ENV_API_KEY, "OPENAI_API_KEY") if os.environ.get(v)), None)
    request = urllib.request.Request(base_url.rstrip("/") + "/models", method="GET")
    if key_var is not None:
        request.add_header("Authorization", f"Bearer {os.environ[key_var]}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            held = f"${key_var}" if key_var else f"no key (set ${ENV_API_KEY})"
            raise ValueError(
                f"--judge-base-url {base_url}: the endpoint refused the key (HTTP {err.code}); "
                f"the key came from {held}"
            ) from None
        return  # it answered: some servers have no /models route
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ValueError(
            f"--judge-base-url {base_url}: no answer to GET /models within {timeout:g} s "
            f"({type(reason).__name__}: {reason}); start the server or fix the URL"
        ) from None


# --------------------------------------------------------------------------- per command


def check_runtime(args: argparse.Namespace) -> None:
    """``--threads``, ``--dtype`` and ``--device``; ``args.device`` becomes the device
    ``auto`` resolves to, so everything after the pre-flight sees a concrete device."""
    if getattr(args, "threads", None) is not None and args.threads < 1:
        raise ValueError(f"--threads {args.threads}: must be >= 1")
    if hasattr(args, "dtype"):
        resolve_dtype(args.dtype)
    if hasattr(args, "device"):
        args.device = resolve_device(args.device)


def check_train(args: argparse.Namespace) -> None:
    """``bae-lens train``: device and dtype, BAE options, output run folder, datasets, hook."""
    check_runtime(args)
    from bae_lens.bae import BAE_OPTIONS, BinaryAutoencoderTrainingConfig
    from bae_lens.config_args import config_values

    BinaryAutoencoderTrainingConfig(d_in=1, d_sae=1, **config_values(args, BAE_OPTIONS))
    check_output_folder("--output", args.output, overwrite=args.overwrite)
    check_dataset("--dataset", args.dataset, ["train"] if args.eval_dataset else ["train", "eval"])
    if args.eval_dataset is not None:
        check_dataset("--eval-dataset", args.eval_dataset, ["all"])
    check_hooks("--hook", [args.hook], model_hook_shapes(args.model))
    if args.frontier not in (None, "none") and Path(args.frontier).is_dir():
        raise ValueError(f"--frontier {args.frontier}: is a folder; give frontier.json or none")


def check_compare(args: argparse.Namespace) -> None:
    """``bae-lens compare``: device and dtype, its work folder (resumed with --reuse),
    output, dataset, hook."""
    check_runtime(args)
    from bae_lens.compare import TRANSCODERS, check_dictionaries, transcoder_hooks

    names = [n.strip() for n in args.dictionaries.split(",") if n.strip()]
    check_dictionaries(names)
    work = Path(args.work_dir)
    trained = sorted(p.parent.name for p in work.glob("*/cfg.json")) if work.is_dir() else []
    if work.is_file():
        raise ValueError(f"--work-dir {args.work_dir}: is an existing file; give a folder path")
    check_writable("--work-dir", work)
    if trained and not (args.reuse or args.overwrite):
        raise ValueError(
            f"--work-dir {args.work_dir}: already holds trained dictionaries {trained}; pass "
            "--reuse to load them, --overwrite to retrain them, or give a new folder"
        )
    check_output_folder("--output", args.output, resumes=True)
    check_dataset("--dataset", args.dataset, ["train", "eval"])
    hooks = [args.hook]
    if any(n in TRANSCODERS for n in names):
        hooks += transcoder_hooks(args.hook)
    check_hooks("--hook", hooks, model_hook_shapes(args.model))


def check_frontier(args: argparse.Namespace) -> None:
    """``bae-lens frontier``: output folders (the work folder resumes), dataset, hook, and
    disk space for the activation cache unless one for this model, hook and corpus exists;
    device and dtype."""
    check_runtime(args)
    from bae_lens.activation_cache import ROWS_FILE, CacheKey
    from bae_lens.frontier import cache_folder
    from bae_lens.model_cache import EMBEDDED_MODEL_NAME

    check_output_folder("--work-dir", args.work_dir, resumes=True)
    check_output_folder("--output", args.output, resumes=True)
    check_dataset("--dataset", args.dataset, ["train", "eval"])
    shapes = model_hook_shapes(args.model)
    check_hooks("--hook", [args.hook], shapes)
    if shapes is None:
        return
    rows = args.training_tokens
    key = CacheKey(args.model or EMBEDDED_MODEL_NAME, args.hook, args.dataset, "train",
                   args.context_size, rows, args.seed)  # fmt: skip
    default = cache_folder(key)
    folder = Path(args.cache_dir) if args.cache_dir else default.parent
    if args.cache_dir and (folder / ROWS_FILE).is_file():
        return
    if not args.cache_dir and any(folder.glob(default.name.replace(f"_{rows}rows", "_*rows"))):
        return  # a cache of this model, hook and corpus is there (reused or rebuilt in place)
    d_in = math.prod(shapes[args.hook][2:])
    check_disk_space("--cache-dir", folder, rows * d_in * 2, f"{rows} rows x d_in {d_in} x 2 bytes")


def check_evaluate(args: argparse.Namespace) -> None:
    """``bae-lens eval``: dictionaries, output, dataset, hook, sizes, device."""
    check_runtime(args)
    for option in ("context_size", "eval_sequences", "batch_size"):
        low = 2 if option == "context_size" else 1
        if getattr(args, option) < low:
            raise ValueError(
                f"--{option.replace('_', '-')} {getattr(args, option)}: must be >= {low}"
            )
    check_sae_folders("saes", args.saes, pretrained=True)
    check_output_folder("--output", args.output, resumes=True)
    check_dataset("--dataset", args.dataset, ["eval"])
    if args.hook is not None:
        check_hooks("--hook", [args.hook], model_hook_shapes(args.model))


def check_comsem(args: argparse.Namespace) -> None:
    """``bae-lens comsem``: dictionaries (none with --calibrate), output (resumable:
    collections and judge cache), dataset, hook, the named local judge (known, not beside
    --judge-gguf, installed) and the judge endpoint (unless --collect-only or --local-judge)."""
    from bae_lens.comsem import judges
    from bae_lens.comsem.judge import ENV_BASE_URL, ENV_MODEL

    check_runtime(args)
    calibrate = getattr(args, "calibrate", False)
    if calibrate and (args.saes or args.collect_only):
        what = "dictionaries" if args.saes else "--collect-only"
        raise ValueError(f"--calibrate: judges ground-truth features, so takes no {what}")
    name = getattr(args, "judge", None)
    if name is not None:
        if name not in judges.JUDGES:
            raise ValueError(f"--judge {name}: unknown judge; allowed: {', '.join(judges.JUDGES)}")
        if args.judge_gguf is not None:
            raise ValueError(
                f"--judge {name}: give --judge or --judge-gguf {args.judge_gguf}, not both"
            )
        if not args.local_judge:
            raise ValueError(f"--judge {name}: names an offline judge; add --local-judge")
        if not args.collect_only and judges.installed_path(name) is None:
            raise ValueError(
                f"--judge {name}: not installed; run: {judges.get(name).install_command}"
            )
    if not calibrate and not args.saes:
        raise ValueError("saes: give at least one saved dictionary (or --calibrate)")
    folders = [item.rpartition("=")[2] for item in args.saes]
    check_sae_folders("saes", folders)
    check_output_folder("--output", args.output, resumes=True)
    if args.calibration_file is not None:
        check_output_file("--calibration-file", args.calibration_file)
    if args.cache is not None:
        check_output_file("--cache", args.cache)
    check_dataset("--dataset", args.dataset, ["eval"])
    if args.hook is not None:
        check_hooks("--hook", [args.hook], model_hook_shapes(args.model))
    if not (args.collect_only or args.local_judge):
        env = os.environ
        check_judge(
            args.judge_base_url or env.get(ENV_BASE_URL) or env.get("OPENAI_BASE_URL") or "",
            args.judge_model or env.get(ENV_MODEL) or "",
        )


def check_entropy(args: argparse.Namespace, layers: list[int]) -> None:
    """``bae-lens entropy``: output file, --sae folder, --states, layers, --auto-price."""
    check_runtime(args)
    if getattr(args, "auto_price", False) and (args.icl or args.sae is not None):
        raise ValueError(
            f"--auto-price with {'--icl' if args.icl else '--sae'}: it chooses the price of a "
            "BAE trained here on corpus states, so it applies without --icl (not supported "
            "there yet) and without --sae (that BAE is already trained)"
        )
    check_output_file("--output", args.output)
    if args.sae is not None:
        check_sae_folders("--sae", [args.sae])
    if args.states is not None:
        check_output_file("--states", args.states)
    if not (args.icl and args.states is not None and Path(args.states).is_file()):
        check_layers("--layers", layers, args.model)


def check_import_legacy(args: argparse.Namespace) -> None:
    """``bae-lens import-legacy``: input files, output run folder."""
    for option, path in (("--model", args.model), ("--params", args.params),
                         ("--hidden-states", args.hidden_states)):  # fmt: skip
        check_input_file(option, path)
    check_output_folder("--output", args.output, overwrite=args.overwrite)


def check_dashboard(args: argparse.Namespace) -> None:
    """``bae-lens dashboard``: the dictionary, sizes, features, the ComSem file, output,
    dataset, hook, and the memory the per-token values of every feature would take."""
    from bae_lens.dashboard import load_comsem_descriptions
    from bae_lens.io import read_sae_config

    check_runtime(args)
    for option in ("context_size", "sequences", "batch_size", "n_top", "n_features"):
        low = 2 if option == "context_size" else 1
        if getattr(args, option) < low:
            raise ValueError(
                f"--{option.replace('_', '-')} {getattr(args, option)}: must be >= {low}"
            )
    check_sae_folders("sae", [args.sae])
    d_sae = int(read_sae_config(args.sae)["d_sae"])
    if args.features is not None:
        try:
            features = [int(f) for f in args.features.split(",") if f.strip()]
        except ValueError:
            raise ValueError(f"--features {args.features}: give feature ids like 3,17,42") from None
        bad = [f for f in features if not 0 <= f < d_sae]
        if not features or bad:
            raise ValueError(f"--features {args.features}: features are 0..{d_sae - 1}")
    try:
        ignored = [int(x) for x in args.ignore_positions.split(",") if x.strip()]
    except ValueError:
        ignored = [-1]
    if any(not 0 <= x < args.context_size for x in ignored):
        raise ValueError(
            f"--ignore-positions {args.ignore_positions}: give positions 0..{args.context_size - 1}"
            ", comma-separated"
        )
    if args.comsem is not None:
        load_comsem_descriptions(args.comsem, args.comsem_name)
    check_output_folder("--output", args.output, overwrite=args.overwrite)
    check_dataset("--dataset", args.dataset, ["eval"])
    if args.hook is not None:
        check_hooks("--hook", [args.hook], model_hook_shapes(args.model))
    tracked = d_sae * args.sequences * args.context_size * 4
    if args.features is None and tracked > DASHBOARD_MAX_BYTES:
        raise ValueError(
            f"--sequences {args.sequences}: keeping every feature's value at every token takes "
            f"{tracked / 1e9:.1f} GB (d_sae {d_sae}); give --features or fewer --sequences"
        )


DASHBOARD_MAX_BYTES = 2_000_000_000
"""Largest per-token value table ``bae-lens dashboard`` keeps without --features."""


def check_upload_args(args: argparse.Namespace) -> str:
    """``bae-lens upload``: the folder is a saved SAE, the repository id is OWNER/NAME, and a
    token is in the environment (named, never shown); returns the path in the repository."""
    from bae_lens.hub import check_upload, hub_token

    try:
        where = check_upload(args.sae, args.repo_id, args.path_in_repo)
    except FileNotFoundError as err:
        raise ValueError(f"sae {args.sae}: not a usable saved dictionary: {err}") from None
    except ValueError as err:
        if str(err).startswith("--"):
            raise
        raise ValueError(f"sae {args.sae}: not a usable saved dictionary: {err}") from None
    hub_token()
    return where
