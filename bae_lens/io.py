"""Load a saved dictionary with errors that name the path and the problem.

``SAE.load_from_disk`` on a missing directory, a broken ``cfg.json``, an unknown
architecture or a truncated ``sae_weights.safetensors`` fails deep inside json,
safetensors or torch. :func:`load_sae` checks each of these first and raises
FileNotFoundError or ValueError naming the file, then calls ``SAE.load_from_disk``.
:func:`load_sae_or_pretrained` also takes a SAELens pretrained SAE as ``release/sae_id``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME
from sae_lens.loading import pretrained_saes_directory
from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY
from safetensors import safe_open

_CORE_WEIGHTS = ("W_enc", "W_dec", "b_enc", "b_dec")


def read_sae_config(path: str | Path) -> dict[str, Any]:
    """``cfg.json`` of a saved dictionary, checked: parseable, a known architecture,
    integer ``d_in`` / ``d_sae`` >= 1."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SAE directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is a file; expected a directory with {SAE_CFG_FILENAME}")
    cfg_path = path / SAE_CFG_FILENAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{str(cfg_path)!r} does not exist (not a saved SAE directory)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(cfg_path)!r} is not valid JSON: {err}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{str(cfg_path)!r} must hold a JSON object, got {type(cfg).__name__}")
    architecture = cfg.get("architecture", "standard")
    if architecture not in SAE_CLASS_REGISTRY:
        raise ValueError(
            f"{str(cfg_path)!r}: architecture={architecture!r} is not one of "
            f"{sorted(SAE_CLASS_REGISTRY)}"
        )
    for field in ("d_in", "d_sae"):
        value = cfg.get(field)
        if value is None:
            raise ValueError(f"{str(cfg_path)!r} has no {field!r}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{str(cfg_path)!r}: {field}={value!r} must be an integer >= 1")
    return cfg


def _expected_shapes(cfg: dict[str, Any], cfg_path: Path) -> dict[str, tuple[int, ...]]:
    cfg_dict = handle_config_defaulting(dict(cfg))
    sae_cls, cfg_cls = SAE_CLASS_REGISTRY[cfg_dict.get("architecture", "standard")]
    try:
        sae_cfg = cfg_cls.from_dict(cfg_dict)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{str(cfg_path)!r}: invalid config: {err}") from None
    sae_cfg.device = "meta"
    sae = sae_cls(sae_cfg)
    return {name: tuple(t.shape) for name, t in sae.state_dict().items()}


def check_sae_weights(path: str | Path, cfg: dict[str, Any]) -> None:
    """Check ``sae_weights.safetensors``: readable, and its tensors' shapes match ``cfg``."""
    path = Path(path)
    weights_path = path / SAE_WEIGHTS_FILENAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"{str(weights_path)!r} does not exist")
    try:
        with safe_open(str(weights_path), framework="pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises SafetensorError, OSError, ...
        raise ValueError(
            f"{str(weights_path)!r} is truncated or not a safetensors file ({err})"
        ) from None
    expected = _expected_shapes(cfg, path / SAE_CFG_FILENAME)
    missing = [name for name in _CORE_WEIGHTS if name in expected and name not in shapes]
    if missing:
        raise ValueError(
            f"{str(weights_path)!r} lacks {missing} needed by architecture "
            f"{cfg.get('architecture', 'standard')!r} (has {sorted(shapes)})"
        )
    unexpected = sorted(set(shapes) - set(expected))
    if unexpected:
        raise ValueError(
            f"{str(weights_path)!r} holds {unexpected}, which architecture "
            f"{cfg.get('architecture', 'standard')!r} has not (it has {sorted(expected)}); "
            "is cfg.json's architecture right?"
        )
    for name, shape in shapes.items():
        if name in expected and expected[name] != shape:
            raise ValueError(
                f"{str(weights_path)!r}: {name} has shape {shape} but cfg.json "
                f"(d_in={cfg['d_in']}, d_sae={cfg['d_sae']}) needs {expected[name]}"
            )


RUNNER_CFG_FILENAME = "runner_cfg.json"


def _config_fields(architecture: str) -> set[str]:
    return {f.name for f in dataclasses.fields(SAE_CLASS_REGISTRY[architecture][1])}


def _trained_as(runner_path: Path) -> list[str]:
    """The names of the inference architecture of the dictionary that ``runner_cfg.json``
    says was trained (a training architecture may save as another: batchtopk as jumprelu;
    several names may share one inference config, as the random control and the BAE do),
    or [] when the file is absent or its architecture is not registered here."""
    try:
        sae = json.loads(runner_path.read_text())["sae"]
        training_cfg_cls = SAE_TRAINING_CLASS_REGISTRY[sae["architecture"]][1]
        inference_cls = training_cfg_cls.from_dict(sae).get_inference_config_class()
    except Exception:  # absent, unreadable, unregistered: nothing to compare with
        return []
    return sorted(a for a, (_, c) in SAE_CLASS_REGISTRY.items() if c is inference_cls)


def check_architecture_claim(path: str | Path, cfg: dict[str, Any]) -> None:
    """The architecture ``cfg.json`` names is the one that wrote the folder.

    A cfg.json edited to say "standard" over a BAE's weights loads (the tensors have the
    same names and shapes) and evaluates as nonsense. Two traces give it away: fields that
    only another architecture's config has (``bits_per_feature``, ``binarization``, ... for
    a BAE; ``k`` for TopK), and the architecture SAELens's runner recorded in
    ``runner_cfg.json`` when it trained the dictionary. Either one contradicting
    ``architecture`` is a ValueError naming both.
    """
    path = Path(path)
    claimed = cfg.get("architecture", "standard")
    where = str(path / SAE_CFG_FILENAME)
    names = _trained_as(path / RUNNER_CFG_FILENAME)
    if names and claimed not in names:
        trained = names[0]
        raise ValueError(
            f"{where!r}: architecture={claimed!r}, but {RUNNER_CFG_FILENAME} says the weights "
            f"were trained as a dictionary saved as {trained!r}; set architecture={trained!r}"
        )
    own = _config_fields(claimed)
    owners: dict[str, list[str]] = {}
    for arch in SAE_CLASS_REGISTRY:
        keys = sorted(k for k in cfg if k in _config_fields(arch) and k not in own)
        if keys:
            owners[arch] = keys
    if owners:
        keys = sorted({k for ks in owners.values() for k in ks})
        raise ValueError(
            f"{where!r}: architecture={claimed!r}, but it holds {keys}, fields of "
            f"{sorted(owners)} that {claimed!r} has not: the weights were likely written "
            "by one of those (fix architecture)"
        )


def load_sae(path: str | Path, device: str = "cpu", dtype: str | None = None) -> SAE[Any]:
    """Checked ``SAE.load_from_disk``: any registered architecture, "bae" included.

    Raises FileNotFoundError (missing directory or file) or ValueError (unparseable or
    invalid cfg.json, unknown architecture, an architecture contradicted by the folder
    (:func:`check_architecture_claim`), truncated weights, tensors missing, unexpected or
    of shapes not matching cfg.json), each naming the path.
    """
    if device != "meta":
        try:
            torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"device={device!r} is not a torch device ({err})") from None
    cfg = read_sae_config(path)
    check_architecture_claim(path, cfg)
    check_sae_weights(path, cfg)
    return SAE.load_from_disk(path, device=device, dtype=dtype)


def pretrained_ref(name: str) -> tuple[str, str] | None:
    """``(release, sae_id)`` when ``name`` is ``release/sae_id`` of a release in SAELens's
    pretrained directory and not a local path; None otherwise (a folder).

    >>> pretrained_ref("runs/bae") is None  # no release is called "runs"
    True
    """
    if "/" not in name or Path(name).expanduser().exists():
        return None
    release, _, sae_id = name.partition("/")  # release names hold no "/"; sae ids may
    directory = pretrained_saes_directory.get_pretrained_saes_directory()
    if release not in directory:
        return None
    ids = directory[release].saes_map
    if sae_id not in ids:
        shown = ", ".join(list(ids)[:5]) + (", ..." if len(ids) > 5 else "")
        raise ValueError(
            f"{name!r}: SAELens release {release!r} has no SAE {sae_id!r}; ids: {shown}"
        )
    return release, sae_id


def load_sae_or_pretrained(name: str, device: str = "cpu", dtype: str | None = None) -> SAE[Any]:
    """A saved folder (:func:`load_sae`) or a SAELens pretrained SAE named ``release/sae_id``
    (``SAE.from_pretrained(release, sae_id)``: the hub, or its local cache)."""
    ref = pretrained_ref(name)
    if ref is None:
        return load_sae(name, device=device, dtype=dtype)
    return SAE.from_pretrained(*ref, device=device, dtype=dtype or "float32")


def load_bae(path: str | Path, device: str = "cpu", dtype: str | None = None) -> SAE[Any]:
    """:func:`load_sae` that also requires ``architecture == "bae"``."""
    cfg = read_sae_config(path)
    if cfg.get("architecture") != "bae":
        raise ValueError(
            f"{str(Path(path) / SAE_CFG_FILENAME)!r}: architecture="
            f"{cfg.get('architecture')!r}, expected 'bae' (use load_sae for other dictionaries)"
        )
    return load_sae(path, device=device, dtype=dtype)
