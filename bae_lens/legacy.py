"""Import what the paper's released code wrote, without running pickle code.

The released training script (arXiv 2509.20997's code) writes three kinds of files:

- the model, ``torch.save(model.state_dict())`` of a ``BinarizedAutoencoder``:
  ``encoder.weight [d_sae, d]``, ``encoder.bias [d_sae]``, ``decoder.weight [d, d_sae]``
  and, only when trained with ``--bias``, ``decoder.bias [d]``. Its forward is
  ``y = out_act(bin(x A^T + a) B^T + b)``: no ``b_dec`` is subtracted before encoding.
- a log, ``pickle.dump({"log": ..., "params": {...}})`` whose ``params`` hold
  ``inner_expand_rate``, ``binarization_type``, ``cycle_for_squarewave``,
  ``output_activation`` and the loss weights;
- its training data, ``pickle.dump`` of a list of 1-D tensors (or of a list of such
  lists, one per layer).

:func:`import_legacy_model` turns the model into a SAELens-format BAE whose outputs are
identical: ``W_enc = A^T``, ``b_enc = a``, ``W_dec = B^T``, ``b_dec = b`` (zeros without
``decoder.bias``) and ``apply_b_dec_to_input = False``. The state dict is read with
``torch.load(weights_only=True)`` and both pickles with :mod:`bae_lens.safe_pickle`.

Mapping of ``binarization_type`` (:data:`LEGACY_BINARIZATIONS`):

============ ============== =============== ==========================================
released     binarization   estimator       note
============ ============== =============== ==========================================
"sign"       "step"         "identity"      forward 1[z > 0], straight-through backward
"sign_s"     "step"         "sigmoid"       same forward; the released backward is
                                            g(1 - g) (bae_lens's "reference"); the
                                            intended sigmoid estimator is used
"squarewave" "square_wave"  "square_wave"   forward 1[(z mod 2) < 1]: the released
                                            forward ignores cycle_for_squarewave and
                                            always uses period 2, so the import does
============ ============== =============== ==========================================

The estimator only matters when training on: it is recorded, with the loss weights
mapped to bae_lens's names, in ``legacy_import.json`` beside the converted model. The
released loss weights are copied verbatim; its normalisation of the entropy and
covariance terms may differ from bae_lens's ``"mean"`` reductions, so treat them as a
starting point, not as equivalent coefficients. ``entropy_start_epoch`` counts epochs of
the released loop and is not converted to steps.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from safetensors.torch import save_file
from torch import Tensor

from bae_lens.bae import BinaryAutoencoder, BinaryAutoencoderConfig
from bae_lens.safe_pickle import safe_load

logger = logging.getLogger(__name__)

LEGACY_BINARIZATIONS: dict[str, tuple[str, str]] = {
    "sign": ("step", "identity"),
    "sign_s": ("step", "sigmoid"),
    "squarewave": ("square_wave", "square_wave"),
}
"""released binarization_type -> (bae_lens binarization, estimator)."""

LEGACY_SQUARE_WAVE_PERIOD = 2.0
"""The period the released square-wave forward hard-codes (``input % 2 < 1``)."""

_OUTPUT_ACTIVATIONS = {"none": "identity", "sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu"}
_REQUIRED_KEYS = ("encoder.weight", "encoder.bias", "decoder.weight")
_OPTIONAL_KEYS = ("decoder.bias",)
ACTIVATIONS_KEY = "activations"
"""Tensor name in the safetensors file written by :func:`save_activations`."""
IMPORT_INFO_FILENAME = "legacy_import.json"


class LegacyImport(NamedTuple):
    """A converted released model."""

    sae: BinaryAutoencoder
    """Inference BAE with outputs identical to the released model's."""
    training_options: dict[str, Any]
    """BinaryAutoencoderTrainingConfig fields implied by the released params."""
    params: dict[str, Any]
    """The released ``params`` dict as read (empty without a log file)."""


def load_legacy_params(path: str | Path) -> dict[str, Any]:
    """The ``params`` dict of a released log pickle, read with the allow-list unpickler."""
    log = safe_load(path)
    if not isinstance(log, dict) or not isinstance(log.get("params"), dict):
        raise ValueError(f"{str(path)!r}: expected a pickled dict with a 'params' dict")
    return dict(log["params"])


def _legacy_options(params: dict[str, Any]) -> dict[str, Any]:
    btype = params.get("binarization_type", "sign")
    if btype not in LEGACY_BINARIZATIONS:
        raise ValueError(f"binarization_type={btype!r} is not one of {list(LEGACY_BINARIZATIONS)}")
    out_act = params.get("output_activation", "none")
    if out_act not in _OUTPUT_ACTIVATIONS:
        raise ValueError(f"output_activation={out_act!r} is not one of {list(_OUTPUT_ACTIVATIONS)}")
    binarization, estimator = LEGACY_BINARIZATIONS[btype]
    cycle = params.get("cycle_for_squarewave", 2)
    if btype == "squarewave" and cycle != LEGACY_SQUARE_WAVE_PERIOD:
        logger.warning(
            "cycle_for_squarewave=%r is ignored by the released forward (period 2); "
            "the import keeps period 2 so that outputs stay identical",
            cycle,
        )
    options: dict[str, Any] = {
        "binarization": binarization,
        "estimator": estimator,
        "square_wave_period": LEGACY_SQUARE_WAVE_PERIOD,
        "output_activation": _OUTPUT_ACTIVATIONS[out_act],
        "apply_b_dec_to_input": False,
        "covariance_penalty": "abs",  # the released sum of |off-diagonal covariance|
    }
    for released, ours in (
        ("entropy_weight", "entropy_coefficient"),
        ("covarience_weight", "covariance_coefficient"),
        ("covariance_weight", "covariance_coefficient"),
        ("entropy_threshold", "entropy_threshold"),
    ):
        if released in params:
            options[ours] = float(params[released])
    return options


def _check_state_dict(state_dict: Any, where: str) -> tuple[int, int]:
    if not isinstance(state_dict, dict):
        raise ValueError(f"{where}: expected a state dict, got {type(state_dict).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in state_dict]
    unknown = [k for k in state_dict if k not in _REQUIRED_KEYS + _OPTIONAL_KEYS]
    if missing or unknown:
        raise ValueError(
            f"{where}: not a released BinarizedAutoencoder state dict (missing {missing}, "
            f"unexpected {unknown}; expected {list(_REQUIRED_KEYS + _OPTIONAL_KEYS)})"
        )
    enc = state_dict["encoder.weight"]
    if not isinstance(enc, Tensor) or enc.ndim != 2:
        raise ValueError(f"{where}: encoder.weight must be a 2-D tensor [d_sae, d]")
    d_sae, d_in = enc.shape
    expected = {
        "encoder.weight": (d_sae, d_in),
        "encoder.bias": (d_sae,),
        "decoder.weight": (d_in, d_sae),
        "decoder.bias": (d_in,),
    }
    for key, value in state_dict.items():
        shape = tuple(value.shape) if isinstance(value, Tensor) else None
        if shape != expected[key]:
            raise ValueError(f"{where}: {key} has shape {shape}, expected {expected[key]}")
        if not value.is_floating_point() or not torch.isfinite(value).all():
            raise ValueError(f"{where}: {key} must be finite floating-point values")
    return d_in, d_sae


def convert_legacy_state_dict(
    state_dict: dict[str, Tensor],
    params: dict[str, Any] | None = None,
    *,
    device: str = "cpu",
    where: str = "state dict",
) -> LegacyImport:
    """Build the BAE that computes exactly what the released model with ``params`` does."""
    params = dict(params or {})
    d_in, d_sae = _check_state_dict(state_dict, where)
    rate = params.get("inner_expand_rate")
    if rate is not None and d_sae != rate * d_in:
        raise ValueError(
            f"{where}: encoder has d_sae={d_sae} but params say inner_expand_rate={rate} "
            f"with d={d_in} (expected {rate * d_in})"
        )
    options = _legacy_options(params)
    enc_w = state_dict["encoder.weight"]
    dtype = str(enc_w.dtype).removeprefix("torch.")
    cfg = BinaryAutoencoderConfig(
        d_in=d_in,
        d_sae=d_sae,
        dtype=dtype,
        device=device,
        apply_b_dec_to_input=False,
        binarization=options["binarization"],
        square_wave_period=options["square_wave_period"],
        output_activation=options["output_activation"],
    )
    sae = BinaryAutoencoder(cfg)
    dec_b = state_dict.get("decoder.bias")
    weights = {
        "W_enc": enc_w.T.contiguous(),  # [d, d_sae]
        "b_enc": state_dict["encoder.bias"],
        "W_dec": state_dict["decoder.weight"].T.contiguous(),  # [d_sae, d]
        "b_dec": dec_b if dec_b is not None else torch.zeros(d_in, dtype=enc_w.dtype),
    }
    sae.load_state_dict({k: v.to(device=device, dtype=enc_w.dtype) for k, v in weights.items()})
    return LegacyImport(sae=sae, training_options=options, params=params)


def import_legacy_model(
    model_path: str | Path, params_path: str | Path | None = None, *, device: str = "cpu"
) -> LegacyImport:
    """Read a released model (``torch.save`` of its state dict) and, optionally, its log."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"model file {str(model_path)!r} does not exist")
    try:
        state_dict = torch.load(model_path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise ValueError(
            f"{str(model_path)!r}: not a weights-only torch state dict "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    params = load_legacy_params(params_path) if params_path is not None else {}
    return convert_legacy_state_dict(state_dict, params, device=device, where=str(model_path))


def save_legacy_import(result: LegacyImport, output_dir: str | Path) -> Path:
    """Save in SAELens's format (``cfg.json`` + ``sae_weights.safetensors``) plus
    ``legacy_import.json`` (released params, mapped training options)."""
    output_dir = Path(output_dir)
    result.sae.save_model(output_dir)
    info = {
        "source": "released BinarizedAutoencoder (arXiv 2509.20997 code)",
        "training_options": result.training_options,
        "released_params": {k: v for k, v in result.params.items() if _is_json(v)},
    }
    (output_dir / IMPORT_INFO_FILENAME).write_text(json.dumps(info, indent=2))
    return output_dir


def _is_json(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None))


def load_legacy_hidden_states(path: str | Path, layer: int | None = None) -> Float[Tensor, "n d"]:
    """Stack a released hidden-state pickle into ``[n, d]`` float32 activations.

    The file holds a list of 1-D tensors or (one per layer) a list of such lists; the
    latter needs ``layer`` (Python indexing, -1 = last), as the released ``--layer``.
    """
    data = safe_load(path)
    if not isinstance(data, list | tuple) or len(data) == 0:
        raise ValueError(f"{str(path)!r}: expected a non-empty list of 1-D tensors")
    layered = isinstance(data[0], list | tuple)
    if layered:
        if layer is None:
            raise ValueError(f"{str(path)!r} holds {len(data)} layers: pass layer=")
        if not -len(data) <= layer < len(data):
            raise ValueError(f"layer={layer} is out of range for {len(data)} layers")
        data = data[layer]
    elif layer is not None:
        raise ValueError(f"layer={layer} given but {str(path)!r} is not per-layer")
    bad = [i for i, t in enumerate(data) if not isinstance(t, Tensor) or t.ndim != 1]
    if bad or len(data) == 0:
        raise ValueError(
            f"{str(path)!r}: expected 1-D tensors; entries {bad[:5]} are not (or list empty)"
        )
    sizes = {int(t.shape[0]) for t in data}
    if len(sizes) != 1:
        raise ValueError(f"{str(path)!r}: hidden states have different sizes {sorted(sizes)}")
    acts = torch.stack([t.detach().float().cpu() for t in data])  # [n, d]
    if not torch.isfinite(acts).all():
        raise ValueError(f"{str(path)!r}: hidden states contain NaN or inf")
    return acts


def save_activations(acts: Float[Tensor, "n d"], path: str | Path) -> Path:
    """Write ``[n, d]`` activations as safetensors (tensor ``"activations"``), the input
    of ``python -m bae_lens.distributed --activations``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({ACTIVATIONS_KEY: acts.contiguous()}, str(path))
    return path
