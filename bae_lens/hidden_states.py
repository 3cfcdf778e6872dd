"""Hidden states of a TransformerLens model at named hooks: the one harvester.

Whatever reads activations out of a model to study them goes through
:func:`iter_hidden_states` (batch by batch) or :func:`collect_hidden_states` (whole
tensors): the entropy of sets (:mod:`bae_lens.entropy`), the in-context-learning states
(:mod:`bae_lens.icl`), ComSem collection (:mod:`bae_lens.comsem.collect`), top examples
(:mod:`bae_lens.feature_examples`) and the float16 activation cache
(:mod:`bae_lens.activation_cache`). Each batch is one forward pass that serves every hook
and stops after the last hooked block (:func:`stop_layer`), so no unembedding is computed
for states that never need it.

Outlier policy (:func:`typical_rows`): a row, one token's activation at one hook, is
atypical when it holds NaN or inf or, given a factor, when its norm exceeds factor x the
median norm of the finite rows beside it. The harvester never drops a row on its own: it
marks the rows to read in :attr:`HiddenBatch.keep`. The same rule drops rows before a set's
BAE trains (:func:`bae_lens.entropy.drop_outlier_rows`) and leaves positions clean in the
splice-in evaluation (:mod:`bae_lens.evaluate`); ``bae_lens.train.OutlierFilter`` applies
it to SAELens's training stream.

Two forward passes stay outside on purpose: the splice-in evaluation needs the full
model's logits and reruns it with hooks replaced, and :func:`bae_lens.baselines
.cache_activations` reads SAELens's ``ActivationsStore`` so that its rows are the ones
``bae-lens train`` would see, in the same order.

The model is passed in; this module imports no model class.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


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


def stop_layer(*hooks: str) -> int | None:
    """``stop_at_layer`` that still runs every one of ``hooks``: the last hooked block + 1,
    or None (the whole model) when a hook sits outside the blocks.

    >>> stop_layer("blocks.14.hook_resid_post")
    15
    >>> stop_layer("blocks.2.hook_resid_post", "blocks.5.attn.hook_z")
    6
    >>> stop_layer("blocks.2.hook_resid_post", "ln_final.hook_normalized") is None
    True
    """
    matches = [_BLOCK_RE.match(hook) for hook in hooks]
    if not matches or any(m is None for m in matches):
        return None
    return max(int(m.group(1)) for m in matches if m is not None) + 1


def typical_rows(x: Float[Tensor, "*rows d"], factor: float | None = 10.0) -> Bool[Tensor, "*rows"]:
    """Rows of ``x`` (the last dimension is one row) that are finite and, unless ``factor``
    is None, have a norm of at most ``factor`` x the median norm of the finite rows.

    The one outlier rule of bae_lens: the residual stream's massive activations (SmolLM2:
    the first token after BOS now and then, ~160x the median norm) would otherwise
    dominate any squared error they enter.

    >>> x = torch.tensor([[3.0, 4.0], [0.0, 5.0], [5.0, 0.0], [500.0, 0.0], [float("nan"), 1.0]])
    >>> typical_rows(x, 10.0).tolist()
    [True, True, True, False, False]
    >>> typical_rows(x, None).tolist()
    [True, True, True, True, False]
    """
    finite = torch.isfinite(x).all(dim=-1)
    if factor is None or not bool(finite.any()):
        return finite
    norms = x.norm(dim=-1)
    return finite & (norms <= factor * norms[finite].median())


class HiddenBatch(NamedTuple):
    """One batch of a harvest."""

    start: int
    """Index of the batch's first sequence among all the sequences harvested."""
    tokens: Int[Tensor, "batch pos"]
    """The batch as it ran (right-padded when the sequences were ragged), on the CPU."""
    lengths: Int[Tensor, " batch"]
    """Tokens of each sequence before padding."""
    keep: Bool[Tensor, "batch pos"]
    """Positions to read, on the CPU: inside the sequence, not a skipped token id, not an
    ignored position, and at every hook a typical row (:func:`typical_rows`)."""
    states: dict[str, Float[Tensor, "batch pos ..."]]
    """Activations per hook, on the model's device in the model's dtype."""


def _batch(
    tokens: Int[Tensor, "n pos"] | Sequence[Sequence[int]],
    start: int,
    batch_size: int,
    pad_token_id: int | None,
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    if isinstance(tokens, Tensor):
        batch = tokens[start : start + batch_size]
        return batch, torch.full((batch.shape[0],), batch.shape[1], dtype=torch.long)
    rows = [list(row) for row in tokens[start : start + batch_size]]
    lengths = [len(row) for row in rows]
    if min(lengths) == 0:
        raise ValueError(f"sequence {start + lengths.index(0)} is empty")
    width = max(lengths)
    if pad_token_id is None and min(lengths) < width:
        raise ValueError(
            f"sequences of {min(lengths)} to {width} tokens need a pad_token_id to batch"
        )
    pad = 0 if pad_token_id is None else pad_token_id  # None: no row is short
    padded = [row + [pad] * (width - len(row)) for row in rows]
    return torch.tensor(padded, dtype=torch.long), torch.tensor(lengths)  # [batch, width]


def _keep(
    batch: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, " batch"],
    skip_token_ids: Sequence[int],
    ignore_positions: Sequence[int],
    states: dict[str, Tensor],
    outlier_factor: float | None,
) -> Bool[Tensor, "batch pos"]:
    positions = torch.arange(batch.shape[1])
    keep = positions[None, :] < lengths[:, None]  # [batch, pos]: padding left out
    keep &= ~torch.isin(batch, torch.tensor(list(skip_token_ids), dtype=batch.dtype))
    keep &= ~torch.isin(positions, torch.tensor(list(ignore_positions), dtype=torch.long))
    for hook, acts in states.items():
        if acts.shape[:2] != keep.shape:
            continue  # not one row per token (an attention pattern): no row to judge
        rows = acts.flatten(2)[keep.to(acts.device)]  # [n_kept, d]
        n_non_finite = int((~torch.isfinite(rows).all(dim=-1)).sum())
        if n_non_finite:
            logger.warning("%s: %d positions hold NaN or inf and are not read", hook, n_non_finite)
        keep[keep.clone()] = typical_rows(rows, outlier_factor).cpu()
    return keep


def iter_hidden_states(
    model: Any,
    tokens: Int[Tensor, "n pos"] | Sequence[Sequence[int]],
    hooks: Sequence[str],
    *,
    batch_size: int = 8,
    pad_token_id: int | None = None,
    skip_token_ids: Sequence[int] = (),
    ignore_positions: Sequence[int] = (),
    outlier_factor: float | None = None,
    progress: bool = False,
    desc: str = "forward",
) -> Iterator[HiddenBatch]:
    """Activations at ``hooks`` for ``tokens``, ``batch_size`` sequences at a time: one
    forward pass per batch (no gradients), stopped after the last hooked block.

    ``tokens``: ``[n, pos]`` ids, or ragged id lists, each batch right-padded with
    ``pad_token_id`` (a causal model never attends to the padding from earlier positions).
    ``keep`` leaves out padding, ``skip_token_ids`` (BOS, padding of a rectangular set),
    ``ignore_positions`` and rows that are not typical at some hook: non-finite always,
    massive norms when ``outlier_factor`` is given (:func:`typical_rows`, median of the
    batch). ``progress`` shows a tqdm bar over the batches, labelled ``desc``.
    """
    check_hooks(model, hooks)
    if not hooks:
        raise ValueError("hooks is empty: nothing to harvest")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be >= 1")
    if outlier_factor is not None and outlier_factor <= 1:
        raise ValueError(f"outlier_factor={outlier_factor!r} must be > 1 (or None)")
    if isinstance(tokens, Tensor) and tokens.ndim != 2:
        raise ValueError(f"tokens must be [n_sequences, pos], got shape {tuple(tokens.shape)}")
    names = list(hooks)
    stop = stop_layer(*names)
    starts = range(0, len(tokens), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress):
        batch, lengths = _batch(tokens, start, batch_size, pad_token_id)
        with torch.no_grad():
            _, cache = model.run_with_cache(
                batch.to(model.cfg.device), names_filter=names, stop_at_layer=stop
            )
        states = {hook: cache[hook] for hook in names}
        keep = _keep(batch, lengths, skip_token_ids, ignore_positions, states, outlier_factor)
        yield HiddenBatch(start, batch, lengths, keep, states)


def collect_hidden_states(
    model: Any,
    tokens: Int[Tensor, "n_seq pos"],
    hooks: Sequence[str],
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[str, Float[Tensor, "n_seq pos d_model"]]:
    """Activations at ``hooks`` for every token, as float32 on the CPU
    (:func:`iter_hidden_states`; nothing is left out: filter with :func:`typical_rows`)."""
    parts: dict[str, list[Tensor]] = {hook: [] for hook in hooks}
    for batch in iter_hidden_states(model, tokens, hooks, batch_size=batch_size, progress=progress):
        for hook in hooks:
            parts[hook].append(batch.states[hook].float().cpu())
    return {hook: torch.cat(p) for hook, p in parts.items()}
