"""Splice-in evaluation of any SAELens dictionary at its hook (../shared/BAE_METHOD.md section 4).

A dictionary reads activations at its input hook (``cfg.metadata.hook_name``) and writes
its reconstruction at its output hook (``cfg.metadata.hook_name_out`` for a transcoder,
SAELens's own key; the input hook otherwise). On held-out token sequences ``[n, ctx]``,
each batch runs once clean, once per output hook with that hook zero-ablated, and once
per dictionary with the output hook's activation replaced by the reconstruction
("spliced"). Position 0 (BOS) is never replaced and never counted in activation metrics:
its residual is a norm outlier and SAELens training excludes special tokens. Likewise for
massive activations elsewhere (SmolLM2: the first token after BOS now and then, norm ~160x
the median): positions whose clean activation at the output hook has a norm above
``outlier_norm_factor`` (default 10) times the batch's median, or holding NaN or inf, are
left clean and not counted (``n_outliers`` says how many): the outlier rule of
:func:`bae_lens.hidden_states.typical_rows`, which bae_lens.train's filter applies too.
Several dictionaries evaluated together (:func:`evaluate_saes`) share the clean and
zero-ablated passes.

Formulas. x: the dictionary's input at one token, y: the clean activation at its output
hook (y = x for an SAE), y^: its reconstruction, z: its code; sums run over the N
evaluated tokens (BOS excluded), CE and KL over every predicted position.

- CE = mean next-token cross-entropy (nats). CE loss recovered =
  (CE_zero - CE_spliced) / (CE_zero - CE_clean): 1 for a perfect dictionary, 0 for one
  no better than zeros (SAELens's ``ce_loss_score``).
- KL_spliced = mean over positions of KL(P_clean || P_spliced) (nats); KL score =
  (KL_zero - KL_spliced) / KL_zero (SAELens's ``kl_div_score``).
- Explained variance = 1 - sum ||y - y^||^2 / sum ||y - mean(y)||^2, pooled over all
  tokens (computed by SAELens's ``ExplainedVarianceCalculator``).
- MSE = mean over tokens and dimensions of (y - y^)^2; ``mse_per_token`` = mean over
  tokens of ||y - y^||^2 (SAELens's training convention, = d_out * MSE).
- Firing indicator a_j = 1[z_j != 0]. For a BAE z is the raw bit vector (d_sae *
  bits_per_feature bits, from ``encode_bits``), so a_j is the bit itself.
- L0 = mean over tokens of sum_j a_j (ones per token for a binary code).
- Firing rate p_j = mean over tokens of a_j; dead: p_j = 0; always on: p_j = 1; dense at
  f: p_j > f, reported at f = 1%, 10% (SAEBench) and 50% (a bit "on by default").
- Burst L0 = sum_j min(p_j, 1 - p_j): the mean number of features away from their
  majority state (= L0 when no feature fires on more than half of the tokens).
- Entropy = sum_j Hb(p_j) bits, Hb(p) = -p log2 p - (1 - p) log2 (1 - p): the sum of
  marginal entropies, an upper bound on the code's joint entropy.

Example::

    tokens = build_eval_tokens(model.tokenizer, texts, 128, 32, model.tokenizer.bos_token_id)
    metrics = evaluate_sae(model, SAE.load_from_disk("runs/bae"), tokens)
    print(metrics_table({"bae": metrics}))
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from einops import rearrange
from jaxtyping import Int
from sae_lens import SAE
from torch import Tensor
from tqdm.auto import tqdm

from bae_lens.hidden_states import check_hooks, typical_rows
from bae_lens.hooks import sae_hook_name
from bae_lens.splice_metrics import (
    MetricAccumulator,
    SpliceMetrics,
    finish_metrics,
    write_results,
)
from bae_lens.stages import StageClock

logger = logging.getLogger(__name__)


def build_eval_tokens(
    tokenizer: Any, texts: list[str], context_size: int, max_sequences: int, bos_token_id: int
) -> Int[Tensor, "n context_size"]:
    """Concatenate ``texts`` and cut into ``[n, context_size]`` rows, each starting with BOS."""
    if context_size < 2:
        raise ValueError(f"context_size={context_size} must be >= 2")
    if max_sequences < 1:
        raise ValueError(f"max_sequences={max_sequences} must be >= 1")
    body = context_size - 1
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) >= body * max_sequences:
            break
    n = min(len(ids) // body, max_sequences)
    if n == 0:
        raise ValueError(
            f"evaluation text has {len(ids)} tokens: fewer than one sequence of {body}"
        )
    rows = rearrange(torch.tensor(ids[: n * body]), "(n body) -> n body", n=n)
    bos = torch.full((n, 1), bos_token_id, dtype=rows.dtype)
    return torch.cat([bos, rows], dim=1)


def dictionary_hooks(sae: SAE[Any], hook_name: str | None = None) -> tuple[str, str]:
    """(input hook, output hook) of ``sae``; ``hook_name`` overrides both for an SAE and
    the input hook of a transcoder (whose output hook is ``metadata.hook_name_out``)."""
    hook_in = sae_hook_name(sae, hook_name)
    hook_out = sae.cfg.metadata.get("hook_name_out") or hook_in
    return hook_in, hook_out


def _d_out(sae: SAE[Any]) -> int:
    return int(getattr(sae.cfg, "d_out", sae.cfg.d_in))


def _code(sae: SAE[Any], x: Tensor) -> Tensor:
    """The code whose firing statistics are reported: raw bits for a BAE."""
    encode_bits = getattr(sae, "encode_bits", None)
    return encode_bits(x) if callable(encode_bits) else sae.encode(x)


def _next_token_logprobs(logits: Tensor) -> Tensor:
    """``[batch, pos - 1, vocab]`` log-probabilities of the next token (one log-softmax,
    shared by the CE and the KL of a pass)."""
    return logits[:, :-1].float().log_softmax(-1)


def _ce_sum(logprobs: Tensor, tokens: Tensor) -> Tensor:
    """Summed next-token cross-entropy over all predicted positions."""
    return -logprobs.gather(-1, tokens[:, 1:, None]).sum()


def _kl_sum(clean_probs: Tensor, clean_logprobs: Tensor, logprobs: Tensor) -> Tensor:
    """sum over positions of KL(P_clean || P) (nats)."""
    return (clean_probs * (clean_logprobs - logprobs)).sum()


def _clean_positions(activation: Tensor, factor: float | None) -> Tensor:
    """``[batch, pos]`` mask of positions kept clean: BOS, and the rows that are not typical
    (:func:`bae_lens.hidden_states.typical_rows`: NaN or inf, or a norm > factor x the
    batch's median after BOS)."""
    mask = torch.ones(activation.shape[:2], dtype=torch.bool, device=activation.device)
    mask[:, 1:] = ~typical_rows(activation.flatten(2)[:, 1:], factor)
    return mask


def _start_block(hook: str) -> int | None:
    """Index of the block holding ``hook`` (``blocks.14.hook_resid_post`` -> 14), or None."""
    match = re.match(r"blocks\.(\d+)\.", hook)
    return int(match.group(1)) if match else None


def _run_from(
    model: Any, tokens: Tensor, cache: Any, block: int | None, fwd_hooks: list[Any]
) -> Tensor:
    """Logits of ``model`` with ``fwd_hooks``, starting at ``block`` from the cached residual.

    Identical to a full forward with the same hooks when the hooks sit in or after
    ``block`` (the blocks before it see the clean input either way); ``block=None`` (a hook
    outside the blocks) runs the whole model.
    """
    if block is None or model.cfg.positional_embedding_type == "shortformer":
        return model.run_with_hooks(tokens, fwd_hooks=fwd_hooks)
    attention_mask = None
    tokenizer = model.tokenizer
    if tokenizer is not None and tokenizer.padding_side == "left":
        # the mask the full forward would compute from the tokens
        from transformer_lens.utils import get_attention_mask

        attention_mask = get_attention_mask(tokenizer, tokens, model.cfg.default_prepend_bos)
    residual = cache[f"blocks.{block}.hook_resid_pre"]  # [batch, pos, d_model]
    return model.run_with_hooks(
        residual,
        start_at_layer=block,
        tokens=tokens,
        attention_mask=attention_mask,
        fwd_hooks=fwd_hooks,
    )


def _replace_hook(replacement: Tensor, keep_clean: Tensor) -> Any:
    """Hook returning ``replacement`` except where ``keep_clean`` [batch, pos] is True."""

    def hook(activation: Tensor, hook: Any = None) -> Tensor:
        out = replacement.to(activation.dtype).clone()
        out[keep_clean] = activation[keep_clean]
        return out

    return hook


def _check_inputs(
    model: Any, hooks: Mapping[str, tuple[str, str]], tokens: Tensor, batch_size: int
) -> None:
    if not hooks:
        raise ValueError("saes is empty: pass at least one dictionary")
    if tokens.ndim != 2 or tokens.shape[1] < 2 or tokens.shape[0] == 0:
        raise ValueError(f"tokens of shape {tuple(tokens.shape)}: need [n >= 1, ctx >= 2]")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if tokens.shape[0] < batch_size:
        raise ValueError(
            f"evaluation set has {tokens.shape[0]} sequences, fewer than one batch "
            f"(batch_size={batch_size}): pass more held-out sequences or a smaller batch_size"
        )
    for name, pair in hooks.items():
        check_hooks(model, pair, f"{name}: hook_name")


def _check_dims(name: str, sae: SAE[Any], hooks: tuple[str, str], x: Tensor, y: Tensor) -> None:
    if x.shape[-1] != sae.cfg.d_in:
        raise ValueError(
            f"{name}: d_in={sae.cfg.d_in} does not match hook {hooks[0]!r}, whose "
            f"activations have shape {tuple(x.shape)} (last dimension {x.shape[-1]})"
        )
    if y.shape[-1] != _d_out(sae):
        raise ValueError(
            f"{name}: output dimension {_d_out(sae)} does not match hook {hooks[1]!r} "
            f"(last dimension {y.shape[-1]})"
        )


class _CleanPass(NamedTuple):
    logprobs: Tensor
    """[batch, pos - 1, vocab] next-token log-probabilities."""
    probs: Tensor
    cache: Any
    """The hooks' activations (ActivationCache)."""


def _clean_pass(model: Any, batch: Tensor, hooks: list[str]) -> _CleanPass:
    logits, cache = model.run_with_cache(batch, names_filter=hooks)
    logprobs = _next_token_logprobs(logits)
    return _CleanPass(logprobs, logprobs.exp(), cache)


def _ablated_ce_kl(
    model: Any, batch: Tensor, clean: _CleanPass, start: int | None, hook: str, replace: Any
) -> tuple[float, float]:
    """Summed CE and KL(clean || pass) of a pass with ``hook`` replaced by ``replace``."""
    logits = _run_from(model, batch, clean.cache, start, [(hook, replace)])
    logprobs = _next_token_logprobs(logits)
    return float(_ce_sum(logprobs, batch)), float(_kl_sum(clean.probs, clean.logprobs, logprobs))


def _add_activations(
    acc: MetricAccumulator,
    sae: SAE[Any],
    cache: Any,
    hooks: tuple[str, str],
    recon: Tensor,
    kept_clean: Tensor,
) -> None:
    """Reconstruction and code statistics over the counted positions of one batch."""
    x, y = cache[hooks[0]], cache[hooks[1]]
    counted = ~kept_clean  # [batch, pos]: BOS and massive activations left out
    acc.n_outliers += int(kept_clean[:, 1:].sum())
    acc.add_activations(
        y[counted].float(),
        recon[counted].float(),
        _code(sae, x[counted].to(sae.dtype)),  # [n_counted, n_features]
    )


@torch.no_grad()
def evaluate_saes(
    model: Any,
    saes: Mapping[str, SAE[Any]],
    tokens: Int[Tensor, "n pos"],
    batch_size: int = 8,
    hook_names: Mapping[str, str] | None = None,
    outlier_norm_factor: float | None = 10.0,
    clock: StageClock | None = None,
) -> dict[str, SpliceMetrics]:
    """Evaluate every dictionary in ``saes`` (name -> SAE) on ``tokens`` ``[n, ctx]``.

    ``hook_names`` optionally overrides a dictionary's recorded input hook. The clean and
    zero-ablated forward passes are shared. Only whole batches are evaluated (the last
    ``n % batch_size`` sequences are left out, so every batch has the same size). Raises ValueError for a hook the model lacks,
    a d_in that does not match the hook, or fewer than ``batch_size`` sequences.
    ``clock`` receives the wall time of the clean, zero-ablated and spliced passes.
    """
    overrides = hook_names or {}
    hooks = {name: dictionary_hooks(sae, overrides.get(name)) for name, sae in saes.items()}
    _check_inputs(model, hooks, tokens, batch_size)
    out_hooks = sorted({pair[1] for pair in hooks.values()})
    resid_pre = {
        f"blocks.{i}.hook_resid_pre" for i in map(_start_block, out_hooks) if i is not None
    }
    needed = sorted({h for pair in hooks.values() for h in pair} | resid_pre)
    acc = {name: MetricAccumulator() for name in saes}
    ce_clean = 0.0
    ce_zero = dict.fromkeys(out_hooks, 0.0)
    kl_zero = dict.fromkeys(out_hooks, 0.0)
    n_pred = 0
    for sae in saes.values():
        sae.eval()
    device = next(iter(saes.values())).device
    n_batches = tokens.shape[0] // batch_size  # whole batches only: every batch the same size
    clock = clock if clock is not None else StageClock()
    # Zero-ablated and spliced passes start at the block holding their hook, from the clean
    # pass's cached residual: the blocks before it would compute the same values again.
    starts = {hook: _start_block(hook) for hook in out_hooks}
    bar = tqdm(total=n_batches * tokens.shape[1] * batch_size, unit="tok", desc="evaluate")
    for b in range(n_batches):
        batch = tokens[b * batch_size : (b + 1) * batch_size].to(device)
        n_tok = batch.numel()
        with clock.stage("eval: clean pass", n_tok):
            clean = _clean_pass(model, batch, needed)
            ce_clean += float(_ce_sum(clean.logprobs, batch))
        n_pred += batch.shape[0] * (batch.shape[1] - 1)
        keep = {h: _clean_positions(clean.cache[h], outlier_norm_factor) for h in out_hooks}
        for hook in out_hooks:
            with clock.stage("eval: zero-ablated pass", n_tok):
                zeros = _replace_hook(torch.zeros_like(clean.cache[hook]), keep[hook])
                ce, kl = _ablated_ce_kl(model, batch, clean, starts[hook], hook, zeros)
                ce_zero[hook] += ce
                kl_zero[hook] += kl
        for name, sae in saes.items():
            hook_in, hook_out = hooks[name]
            _check_dims(name, sae, hooks[name], clean.cache[hook_in], clean.cache[hook_out])
            with clock.stage("eval: spliced pass", n_tok):
                recon = sae.decode(sae.encode(clean.cache[hook_in].to(sae.dtype)))
                splice = _replace_hook(recon, keep[hook_out])  # recon: [batch, pos, d_out]
                ce, kl = _ablated_ce_kl(model, batch, clean, starts[hook_out], hook_out, splice)
                acc[name].ce += ce
                acc[name].kl += kl
            with clock.stage("eval: metrics"):
                _add_activations(acc[name], sae, clean.cache, hooks[name], recon, keep[hook_out])
        bar.update(n_tok)
    bar.close()
    return {
        name: finish_metrics(
            acc[name],
            hooks[name],
            _d_out(saes[name]),
            ce_clean / n_pred,
            ce_zero[hooks[name][1]] / n_pred,
            kl_zero[hooks[name][1]] / n_pred,
            n_pred,
        )
        for name in saes
    }


def evaluate_sae(
    model: Any,
    sae: SAE[Any],
    tokens: Int[Tensor, "n pos"],
    hook_name: str | None = None,
    batch_size: int = 8,
    outlier_norm_factor: float | None = 10.0,
    clock: StageClock | None = None,
) -> SpliceMetrics:
    """Splice ``sae`` into ``model`` at its hook on ``tokens`` ``[n, ctx]`` and measure."""
    overrides = {"sae": hook_name} if hook_name else None
    saes = {"sae": sae}
    results = evaluate_saes(model, saes, tokens, batch_size, overrides, outlier_norm_factor, clock)
    return results["sae"]


# ---- `bae-lens eval` -------------------------------------------------------------------


def load_eval_tokens(
    model: Any, dataset: str, context_size: int, n_sequences: int, eval_split: str = "auto"
) -> Int[Tensor, "n context_size"]:
    """Held-out tokens from ``dataset``'s eval split ("embedded" or a local path/hub name;
    ``eval_split`` as :func:`bae_lens.corpus.load_data`)."""
    from bae_lens.corpus import load_data

    data = load_data(dataset, "eval", eval_split=eval_split, tokens=context_size * n_sequences)
    tok = model.tokenizer
    return build_eval_tokens(tok, data["text"], context_size, n_sequences, tok.bos_token_id)


def evaluate_folders(
    folders: list[str],
    output: Path,
    *,
    model_name: str | None = None,
    hook: str | None = None,
    dataset: str = "embedded",
    context_size: int = 128,
    n_sequences: int = 32,
    batch_size: int = 8,
    device: str = "cpu",
    eval_split: str = "auto",
    dtype: str = "float32",
) -> dict[str, SpliceMetrics]:
    """Load the SAELens save ``folders`` (named by folder) or SAELens pretrained SAEs given
    as ``release/sae_id`` (named so, "/" written "__"), evaluate them side by side on
    ``dataset``'s held-out text and write eval.json, eval.md and histograms to ``output``.
    ``dtype`` (:data:`bae_lens.runtime.DTYPES`) is the SAEs' and the model's."""
    from bae_lens import models
    from bae_lens.io import load_sae_or_pretrained, pretrained_ref
    from bae_lens.runtime import resolve_dtype
    from bae_lens.transcoders import register_transcoders

    register_transcoders()
    names = []
    for path in folders:
        pretrained = pretrained_ref(path) is not None
        if not pretrained and not (Path(path) / "cfg.json").exists():
            raise ValueError(f"{path!r} is not a SAELens save folder (no cfg.json)")
        names.append(path.replace("/", "__") if pretrained else Path(path).name)
    if len(set(names)) != len(folders):
        raise ValueError(f"SAE folders {folders} have repeated names")
    saes = {
        n: load_sae_or_pretrained(p, device=device, dtype=dtype)
        for n, p in zip(names, folders, strict=True)
    }
    model = models.load_model(
        model_name or models.EMBEDDED_MODEL_NAME, device=device, dtype=resolve_dtype(dtype)
    )
    tokens = load_eval_tokens(model, dataset, context_size, n_sequences, eval_split)
    overrides = dict.fromkeys(saes, hook) if hook else None
    results = evaluate_saes(model, saes, tokens, batch_size, overrides)
    write_results(results, output, {"saes": folders, "n_sequences": len(tokens)})
    return results
