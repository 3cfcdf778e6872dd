"""Hidden states of a TransformerLens model at named hooks, for sets whose entropy or
features are studied (:mod:`bae_lens.entropy`, :mod:`bae_lens.icl`).

The model is passed in; this module imports no model class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm


def layer_hooks(model: Any, layers: Sequence[int], kind: str = "resid_post") -> list[str]:
    """``blocks.{layer}.hook_{kind}`` for each layer; ValueError on a layer the model lacks."""
    n_layers = model.cfg.n_layers
    hooks = []
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer={layer!r}: the model has layers 0..{n_layers - 1}")
        hook = f"blocks.{layer}.hook_{kind}"
        check_hooks(model, [hook], f"kind={kind!r}: hook_name")
        hooks.append(hook)
    return hooks


HOOK_EXAMPLES = (
    "TransformerLens names such as blocks.N.hook_resid_post, blocks.N.mlp.hook_post, "
    "blocks.N.attn.hook_z"
)


def check_hooks(model: Any, hooks: Sequence[str], field: str = "hook_name") -> None:
    """ValueError naming the first of ``hooks`` that the loaded ``model`` does not have:
    ``{field}='...' is not a hook of the model; TransformerLens names such as ...``.

    The one hook check on a loaded model (training, caching, harvesting, evaluation);
    :func:`bae_lens.cli.preflight.check_hooks` checks the same names against the model's
    config before it loads, in the same words."""
    for hook in hooks:
        if hook not in model.hook_dict:
            n_layers = getattr(getattr(model, "cfg", None), "n_layers", None)
            bound = f" (N < {n_layers})" if isinstance(n_layers, int) else ""
            raise ValueError(f"{field}={hook!r} is not a hook of the model; {HOOK_EXAMPLES}{bound}")


@torch.no_grad()
def collect_hidden_states(
    model: Any,
    tokens: Int[Tensor, "n_seq pos"],
    hooks: Sequence[str],
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[str, Float[Tensor, "n_seq pos d_model"]]:
    """Activations at ``hooks`` for every token: one forward pass per batch serves all hooks,
    stopping after the deepest hooked block."""
    check_hooks(model, hooks)
    layers = [int(h.split(".")[1]) for h in hooks if h.startswith("blocks.")]
    stop = max(layers) + 1 if len(layers) == len(hooks) else None
    if stop is not None and stop >= model.cfg.n_layers:
        stop = None
    parts: dict[str, list[Tensor]] = {h: [] for h in hooks}
    starts = range(0, tokens.shape[0], batch_size)
    for start in tqdm(starts, desc="forward", disable=not progress):
        _, cache = model.run_with_cache(
            tokens[start : start + batch_size], names_filter=list(hooks), stop_at_layer=stop
        )
        for hook in hooks:
            parts[hook].append(cache[hook].float().cpu())
    return {hook: torch.cat(p) for hook, p in parts.items()}
