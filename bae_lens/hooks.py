"""Attach any SAELens SAE (a BAE included) to a HookedTransformer hook.

One line replaces the hook's activation by the SAE's reconstruction::

    logits = model.run_with_hooks(tokens, fwd_hooks=splice(sae))

``keep_error=True`` adds back the error term ``x - x^`` (detached), so the model's
outputs are unchanged while the SAE's hook points still see every activation. The
hook name defaults to the one recorded in ``sae.cfg.metadata.hook_name``. With
:class:`sae_lens.HookedSAETransformer`, ``model.add_sae(sae)`` / ``run_with_saes``
work too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from sae_lens import SAE
from torch import Tensor

HookFn = Callable[..., Tensor]


def sae_hook_name(sae: SAE[Any], hook_name: str | None = None) -> str:
    """The hook to attach at: ``hook_name`` if given, else the SAE's recorded hook."""
    name = hook_name or sae.cfg.metadata.hook_name
    if not name:
        raise ValueError(
            "hook_name=None and the SAE's cfg.metadata.hook_name is empty: pass hook_name"
        )
    return name


def splice_fn(sae: SAE[Any], keep_error: bool = False, keep_first_position: bool = False) -> HookFn:
    """A TransformerLens hook function that returns the SAE's reconstruction.

    ``keep_first_position`` leaves position 0 (BOS, whose residual norm is an outlier in
    most models) untouched.
    """

    def hook(activation: Tensor, hook: Any = None) -> Tensor:
        recon = sae.decode(sae.encode(activation)).to(activation.dtype)
        if keep_error:
            recon = recon + (activation - recon).detach()
        if keep_first_position and activation.ndim >= 2:
            recon = torch.cat([activation[:, :1], recon[:, 1:]], dim=1)
        return recon

    return hook


def splice(
    sae: SAE[Any],
    hook_name: str | None = None,
    keep_error: bool = False,
    keep_first_position: bool = False,
) -> list[tuple[str, HookFn]]:
    """``fwd_hooks`` for ``run_with_hooks`` that splice ``sae`` in at its hook."""
    return [(sae_hook_name(sae, hook_name), splice_fn(sae, keep_error, keep_first_position))]


def zero_ablate(hook_name: str, keep_first_position: bool = False) -> list[tuple[str, HookFn]]:
    """``fwd_hooks`` that replace the hook's activation by zeros (the CE-recovered floor)."""

    def hook(activation: Tensor, hook: Any = None) -> Tensor:
        zeros = torch.zeros_like(activation)
        if keep_first_position and activation.ndim >= 2:
            zeros[:, :1] = activation[:, :1]
        return zeros

    return [(hook_name, hook)]
