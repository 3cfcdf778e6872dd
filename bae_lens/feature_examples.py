"""Top-activating examples of each feature, ranked by a graded view of a binary code.

A BAE's code is 0/1, so "the tokens where feature j is most active" has no answer in the
code itself. :meth:`bae_lens.bae.BinaryAutoencoder.set_activation_view` gives a graded
value per bit: the margin relu(z) past the firing threshold ("margin"), or the margin away
from the bit's majority state ("burst", the graded form of ComSem's burst score). This
module streams a token corpus through the model (stopping at the hooked block), keeps each
feature's ``n_top`` highest values with their (sequence, position), and measures how well
that ranking agrees with ComSem's burst-score samples (:func:`comsem_agreement`).

Any other SAELens SAE is ranked by ``sae.encode`` (its activation). Special tokens
(BOS, padding) are neither ranked nor counted.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from bae_lens.comsem.collect import Collection, is_binary
from bae_lens.hidden_states import iter_hidden_states

VIEWS = ("auto", "margin", "burst", "activation")


class Example(NamedTuple):
    """One token of the corpus and the feature's graded value there."""

    sequence: int
    position: int
    value: float


@dataclass
class FeatureExamples:
    """Each feature's top examples over one token corpus."""

    view: str
    """"margin" or "burst" (a BAE), "activation" (any other SAE)."""
    n_tokens: int
    firing_rates: list[float]
    """Fraction of tokens where the code is 1 (an SAE: activation > 0)."""
    active_rates: list[float]
    """Fraction of tokens where the view's value is > 0 (for "burst": the bit departs
    from its majority state)."""
    top: dict[int, list[Example]]
    """Feature -> up to ``n_top`` examples with value > 0, highest first."""
    tracked: list[int] = field(default_factory=list)
    """Features whose value at every token is in ``tracked_values``."""
    tracked_values: Tensor | None = None
    """[len(tracked), n_sequences, context] values of the tracked features (0 at special
    tokens): the per-token shading of a dashboard."""

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("top", "tracked_values")}
        out["top"] = {str(j): [e._asdict() for e in ex] for j, ex in self.top.items()}
        return out


def _check_view(view: str, sae: Any) -> str:
    if view not in VIEWS:
        raise ValueError(f"view={view!r} is not one of {list(VIEWS)}")
    binary = is_binary(sae) and hasattr(sae, "set_activation_view")
    if view == "auto":
        return "burst" if binary else "activation"
    if (view == "activation") == binary:
        allowed = "'margin' or 'burst'" if binary else "'activation'"
        raise ValueError(f"view={view!r} does not fit a {type(sae).__name__}: use {allowed}")
    return view


def mine_examples(
    model: Any,
    sae: Any,
    tokens: Int[Tensor, "n_sequences context"],
    hook_name: str | None = None,
    *,
    view: str = "auto",
    n_top: int = 20,
    track: list[int] | None = None,
    batch_size: int = 8,
    skip_token_ids: list[int] | None = None,
    ignore_positions: tuple[int, ...] = (),
    progress: bool = True,
) -> FeatureExamples:
    """Each feature's ``n_top`` highest-valued tokens of ``tokens`` under ``view``.

    ``view``: "auto" ("burst" for a BAE, "activation" otherwise), "margin", "burst" or
    "activation". "burst" first streams the corpus once for the firing rates. ``track``:
    features whose value at every token is kept (:attr:`FeatureExamples.tracked_values`).
    The view is set on a shallow copy of ``sae``: the SAE passed in keeps its own.
    ``ignore_positions``: token positions left out like special tokens (SAE-Dashboard's
    ``ignore_positions``); position 1, the first token after BOS, has a residual stream 1-6x
    the median norm in the embedded model and takes over the top of many features' margins.

    Example (tiny model, BAE)::

        ex = mine_examples(model, bae, tokens, "blocks.0.hook_resid_post", n_top=5)
        ex.top[j][0]   # Example(sequence=.., position=.., value=..), the highest
    """
    view = _check_view(view, sae)
    if n_top < 1:
        raise ValueError(f"n_top={n_top} must be >= 1")
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [n_sequences, context], got {tuple(tokens.shape)}")
    hook = hook_name or sae.cfg.metadata.hook_name
    tokenizer = getattr(model, "tokenizer", None)
    if skip_token_ids is None:
        skip_token_ids = list(getattr(tokenizer, "all_special_ids", []) or [])
    if any(not 0 <= p < tokens.shape[1] for p in ignore_positions):
        raise ValueError(
            f"ignore_positions={ignore_positions}: positions are 0..{tokens.shape[1] - 1}"
        )
    d_sae = sae.cfg.d_sae * getattr(sae.cfg, "bits_per_feature", 1)
    track = list(track or [])
    if any(not 0 <= j < d_sae for j in track):
        raise ValueError(f"track={track}: features are 0..{d_sae - 1}")
    device = next(sae.parameters()).device

    skip = skip_token_ids

    def stream(desc: str) -> Iterator[tuple[int, Tensor, Tensor]]:
        """(first sequence, keep mask [b, T], activations [n_kept, d_in]) per batch."""
        for batch in iter_hidden_states(
            model, tokens, [hook], batch_size=batch_size, skip_token_ids=skip,
            ignore_positions=ignore_positions, progress=progress, desc=desc,
        ):  # fmt: skip
            acts = batch.states[hook]
            yield batch.start, batch.keep, acts[batch.keep.to(acts.device)]

    fired = torch.zeros(d_sae, dtype=torch.float64)
    n = 0
    ranked = copy.copy(sae)  # the view is set on a shallow copy: same weights and hooks
    if view == "burst":
        for _, _, acts in stream("firing rates"):
            fired += sae.encode_bits(acts.to(device)).double().sum(0).cpu()
            n += len(acts)
        if n == 0:
            raise ValueError("tokens hold no non-special token: nothing to rank")
    if view in ("margin", "burst"):
        ranked.set_activation_view(view, (fired / n).float() if view == "burst" else None)
    best = torch.full((n_top, d_sae), -math.inf)
    best_at = torch.zeros((n_top, d_sae), dtype=torch.long)  # flat index seq * T + pos
    active = torch.zeros(d_sae, dtype=torch.float64)
    n_kept = 0
    tracked = torch.zeros(len(track), *tokens.shape)
    context = tokens.shape[1]
    for start, keep, acts in stream("top examples"):
        with torch.no_grad():
            values = ranked.encode(acts.to(device)).float().cpu()  # [n_kept, d_sae]
        rows, cols = keep.nonzero(as_tuple=True)
        flat = (rows + start) * context + cols  # [n_kept]
        active += (values > 0).double().sum(0)
        n_kept += len(values)
        if track:
            tracked[:, rows + start, cols] = values[:, track].T
        pool = torch.cat([best, values])  # [n_top + n_kept, d_sae]
        pool_at = torch.cat([best_at, flat[:, None].expand(-1, d_sae)])
        top = pool.topk(min(n_top, len(pool)), dim=0)
        best, best_at = top.values, pool_at.gather(0, top.indices)
    if n_kept == 0:
        raise ValueError("tokens hold no non-special token: nothing to rank")
    # margin > 0 exactly where the bit is 1; an SAE's activation > 0 where it fires
    rates = fired / n if view == "burst" else active / n_kept
    top_examples: dict[int, list[Example]] = {}
    for j in range(d_sae):
        ex = [
            Example(int(at) // context, int(at) % context, float(v))
            for v, at in zip(best[:, j].tolist(), best_at[:, j].tolist(), strict=True)
            if v > 0
        ]
        if ex:
            top_examples[j] = ex
    return FeatureExamples(
        view=view,
        n_tokens=n_kept,
        firing_rates=rates.float().tolist(),
        active_rates=(active / n_kept).float().tolist(),
        top=top_examples,
        tracked=track,
        tracked_values=tracked if track else None,
    )


class Agreement(NamedTuple):
    """How well a ranking's top examples agree with ComSem's samples of the same feature."""

    n_features: int
    """Features with >= ``min_samples`` ComSem samples and at least one ranked example."""
    precision: float
    """Mean over features of the fraction of the top-``n`` ranked examples that ComSem
    also assigned to the feature."""
    chance: float
    """Mean over features of the same fraction for ``n`` tokens drawn at random among the
    feature's active tokens (value > 0): ComSem's assigned active tokens / active tokens."""
    samples_active: float
    """Fraction of all ComSem samples (pooled) at which the feature's value is > 0."""
    above_chance: float
    """Fraction of the features whose precision exceeds their chance level."""


def comsem_agreement(
    examples: FeatureExamples,
    collection: Collection,
    values: Float[Tensor, "n_sequences context d"] | None = None,
    *,
    n: int = 10,
    min_samples: int = 6,
    ignore_positions: tuple[int, ...] = (),
) -> Agreement:
    """Agreement of ``examples``' top-``n`` tokens per feature with ComSem's assignments.

    ``collection`` must hold every token ComSem assigned (collect with ``max_samples`` at
    least the corpus size), else a feature's set is cut short and ValueError names it.
    ``values`` [n_sequences, context, d_sae]: the view's value at every token, for the
    chance level and ``samples_active``; without it, both are NaN. ``ignore_positions``:
    ComSem samples at these positions are left out (mine ``examples`` with the same).
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    precisions, chances, above = [], [], []
    hits = total = 0
    for j, count in enumerate(collection.sample_counts):
        if count < min_samples or j not in examples.top:
            continue
        samples = collection.samples.get(j, [])
        if len(samples) < count:
            raise ValueError(
                f"feature {j}: the collection keeps {len(samples)} of its {count} samples; "
                "collect with max_samples >= the number of corpus tokens"
            )
        assigned = {(s.sequence, s.position) for s in samples if s.position not in ignore_positions}
        if len(assigned) < min_samples:
            continue
        top = examples.top[j][:n]
        precision = sum((e.sequence, e.position) in assigned for e in top) / len(top)
        precisions.append(precision)
        if values is not None:
            active = values[..., j] > 0
            n_active = int(active.sum())
            in_active = sum(bool(active[s, p]) for s, p in assigned)
            hits, total = hits + in_active, total + len(assigned)
            chance = in_active / n_active if n_active else float("nan")
            chances.append(chance)
            above.append(precision > chance)
    if not precisions:
        raise ValueError(f"no feature has >= {min_samples} ComSem samples and ranked examples")

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    return Agreement(
        n_features=len(precisions),
        precision=mean(precisions),
        chance=mean(chances),
        samples_active=hits / total if total else float("nan"),
        above_chance=mean([float(a) for a in above]),
    )
