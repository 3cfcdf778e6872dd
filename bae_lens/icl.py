"""In-context learning seen through the entropy of hidden states (arXiv 2509.20997 section
3.1; ../shared/BAE_METHOD.md section 3).

A k-shot sentiment prompt is k demonstrations ``Review: <text>\\nSentiment: <label>\\n\\n``
followed by the query ``Review: <text>\\nSentiment:``. The hidden state of interest is at
the query's last token, the label prefix (the colon), where the model must have settled
what comes next. For each k, the set of those hidden states over many prompts has an
entropy (:mod:`bae_lens.entropy`); a model that learns the task from its demonstrations
should need fewer bits to describe the state as k grows.

:func:`collect_icl_states` runs the prompts and keeps the label-prefix states (and the
accuracy of the model's choice between the label words); :func:`save_icl_states` /
:func:`load_icl_states` keep them on disk. :func:`icl_entropy_curve` measures the curve with
one BAE per layer, trained on the states of every k pooled together, so that all k are
measured with the same code.

Control (``random_labels=True``): the same prompts with each demonstration's label replaced
by one drawn uniformly from the label set (:func:`with_random_labels`; Min et al. 2022,
"Rethinking the Role of Demonstrations"). The demonstrations' texts, their number k, the
query and the token length stay the same (each label word is one token), so a curve that
falls as much with random labels as with true ones reflects the prompt's length and
template, not learning the task from its demonstrations.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from bae_lens.entropy import estimate_entropy, train_set_bae
from bae_lens.hidden_states import check_hooks, iter_hidden_states, layer_hooks

LABEL_WORDS = ("negative", "positive")
ICL_TEMPLATE = "Review: {text}\nSentiment:"
"""One example; a demonstration appends " {label}\\n\\n". The query ends at the colon: the
label-prefix token whose hidden state the ICL curve measures."""


class IclPrompt(NamedTuple):
    """One k-shot prompt; the hidden state of interest is at its last token."""

    text: str
    query_index: int
    demo_indices: tuple[int, ...]
    label: int
    """The query's true label: the answer the accuracy is scored against."""
    demo_labels: tuple[int, ...]
    """The label written after each demonstration (its true label, but for the control)."""


def _prompt_text(
    examples: Sequence[tuple[str, int]], demos: Sequence[int], labels: Sequence[int], query: int
) -> str:
    parts = [
        ICL_TEMPLATE.format(text=examples[i][0]) + f" {LABEL_WORDS[label]}\n\n"
        for i, label in zip(demos, labels, strict=True)
    ]
    return "".join(parts) + ICL_TEMPLATE.format(text=examples[query][0])


def build_icl_prompts(
    examples: Sequence[tuple[str, int]], k: int, n_prompts: int, *, seed: int = 0
) -> list[IclPrompt]:
    """``n_prompts`` k-shot sentiment prompts; each draws its own query and its own k
    demonstrations at random (never the query itself, never a fixed first k: the released
    prompt builder reused the first k examples for every prompt).

    ``examples`` are (text, label) with label 0 (negative) or 1 (positive); both labels
    must occur.
    """
    if k < 0 or n_prompts < 1:
        raise ValueError(f"k={k!r} must be >= 0 and n_prompts={n_prompts!r} >= 1")
    if len(examples) < k + 1:
        raise ValueError(f"{len(examples)} examples cannot make a {k}-shot prompt (need k + 1)")
    labels = {label for _, label in examples}
    if not labels <= {0, 1}:
        raise ValueError(f"labels must be 0 (negative) or 1 (positive), got {sorted(labels)}")
    if labels != {0, 1}:
        missing = LABEL_WORDS[1 - labels.pop()]
        raise ValueError(
            f"the {len(examples)} examples have no {missing!r} label: a sentiment task needs both"
        )
    rng = random.Random(seed)
    prompts = []
    for _ in range(n_prompts):
        query, *demos = rng.sample(range(len(examples)), k + 1)
        shown = tuple(examples[i][1] for i in demos)
        text = _prompt_text(examples, demos, shown, query)
        prompts.append(IclPrompt(text, query, tuple(demos), examples[query][1], shown))
    return prompts


def with_random_labels(
    prompts: Sequence[IclPrompt], examples: Sequence[tuple[str, int]], *, seed: int = 0
) -> list[IclPrompt]:
    """The control prompts: each demonstration's label drawn uniformly from the label set
    (so about half of them still match the truth); the demonstrations, the query and its
    label stay. ``examples`` are those the prompts were built from.

    Each label word is one token (:func:`label_token_ids`), so a control prompt has as many
    tokens as its original. The labels come from their own generator (seeded by ``seed``),
    apart from the one that drew the prompts.
    """
    rng = random.Random(f"random labels {seed}")
    out = []
    for p in prompts:
        labels = tuple(rng.randrange(len(LABEL_WORDS)) for _ in p.demo_indices)
        text = _prompt_text(examples, p.demo_indices, labels, p.query_index)
        out.append(p._replace(text=text, demo_labels=labels))
    return out


class LastTokenStates(NamedTuple):
    """Hidden states at the last token of each text, and the logits of chosen tokens there."""

    states: dict[str, Float[Tensor, "n d_model"]]
    logits: Float[Tensor, "n n_ids"]
    """Logits of ``logit_ids`` (in that order) at the last token."""


@torch.no_grad()
def last_token_states(
    model: Any,
    texts: Sequence[str],
    hooks: Sequence[str],
    *,
    logit_ids: Sequence[int] = (),
    batch_size: int = 8,
    progress: bool = False,
) -> LastTokenStates:
    """Hidden states at the last token of each text (BOS prepended; right padding, which a
    causal model never attends to from earlier positions; harvested by
    :func:`bae_lens.hidden_states.iter_hidden_states`).

    Only the logits of ``logit_ids`` at the last token are computed: the final norm and
    those unembedding columns are applied to one row per text, not the full vocabulary at
    every position (Gemma 3's 262k-word unembedding costs more than its blocks).
    """
    check_hooks(model, hooks)
    if not texts:
        raise ValueError("no texts given")
    tok = model.tokenizer
    if tok is None or tok.bos_token_id is None:
        raise ValueError("the model needs a tokenizer with a BOS token to prepend")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = [[tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"]] for t in texts]
    ids_out = torch.tensor(list(logit_ids), dtype=torch.long)
    final_hook = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"  # after the last block
    needed = list(dict.fromkeys([*hooks, final_hook] if len(ids_out) else hooks))
    out: dict[str, list[Tensor]] = {h: [] for h in hooks}
    logits = []
    batches = iter_hidden_states(
        model, ids, needed, batch_size=batch_size, pad_token_id=pad, progress=progress,
        desc="prompts",
    )  # fmt: skip
    for batch in batches:
        rows, last = torch.arange(len(batch.lengths)), batch.lengths - 1
        if len(ids_out):
            final = batch.states[final_hook][rows, last]  # [batch, d_model]
            if model.cfg.normalization_type is not None:
                final = model.ln_final(final)
            chosen = final @ model.W_U[:, ids_out] + model.b_U[ids_out]  # [batch, n_ids]
            cap = model.cfg.output_logits_soft_cap
            if cap > 0:
                chosen = cap * torch.tanh(chosen / cap)
            logits.append(chosen.float().cpu())
        for hook in hooks:
            out[hook].append(batch.states[hook][rows, last].float().cpu())
    states = {hook: torch.cat(v) for hook, v in out.items()}
    return LastTokenStates(states, torch.cat(logits) if logits else torch.zeros(len(texts), 0))


def label_token_ids(tokenizer: Any) -> list[int]:
    """Token ids of " negative" and " positive"; ValueError when a word is not one token."""
    ids = []
    for word in LABEL_WORDS:
        pieces = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise ValueError(f"label {word!r} is {len(pieces)} tokens for this tokenizer, not 1")
        ids.append(pieces[0])
    return ids


class RandomLabelStates(NamedTuple):
    """The control's label-prefix states and accuracy (:func:`with_random_labels`)."""

    states: dict[int, list[Tensor]]
    """layer -> per k, the states of the n_prompts control prompts, [n_prompts, d_model]
    each; at k = 0 (no demonstration to relabel) the real prompts' states themselves."""
    accuracy: list[float]
    """Per k: fraction of control prompts where the query's true label word has the larger
    logit."""


class IclStates(NamedTuple):
    """Label-prefix hidden states of k-shot prompts per layer and k, and the model's accuracy."""

    ks: list[int]
    layers: list[int]
    states: dict[int, list[Tensor]]
    """layer -> per k, the states of the n_prompts prompts, [n_prompts, d_model] each."""
    accuracy: list[float]
    """Per k: fraction of prompts where the true label word has the larger logit."""
    n_prompts: int
    random_labels: RandomLabelStates | None = None
    """The random-label control, when collected."""


def _accuracy(got: LastTokenStates, prompts: Sequence[IclPrompt]) -> float:
    labels = torch.tensor([p.label for p in prompts])
    return float((got.logits.argmax(dim=1) == labels).float().mean())


def collect_icl_states(
    model: Any,
    examples: Sequence[tuple[str, int]],
    ks: Sequence[int],
    layers: Sequence[int],
    *,
    n_prompts: int = 200,
    seed: int = 0,
    random_labels: bool = False,
    progress: bool = False,
) -> IclStates:
    """Run ``n_prompts`` k-shot prompts per k (:func:`build_icl_prompts`, seed
    ``seed * 1000 + k``) and keep the hook_resid_post states at the label-prefix token.

    ``random_labels``: also run the control, the same prompts with random demonstration
    labels (:func:`with_random_labels`, same seed), one more forward per prompt with k > 0.
    """
    if not ks or not layers:
        raise ValueError(f"ks={list(ks)!r} and layers={list(layers)!r} must be non-empty")
    if any(k < 0 for k in ks):
        raise ValueError(f"ks={list(ks)!r} must be >= 0")
    hooks = layer_hooks(model, layers)
    ids = label_token_ids(model.tokenizer)
    states: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    control: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    accuracy, control_accuracy = [], []
    for k in ks:
        prompts = build_icl_prompts(examples, k, n_prompts, seed=seed * 1000 + k)
        got = last_token_states(
            model, [p.text for p in prompts], hooks, logit_ids=ids, progress=progress
        )
        accuracy.append(_accuracy(got, prompts))
        if random_labels and k > 0:
            relabelled = with_random_labels(prompts, examples, seed=seed * 1000 + k)
            texts = [p.text for p in relabelled]
            shown = last_token_states(model, texts, hooks, logit_ids=ids, progress=progress)
        else:
            shown = got  # no demonstration to relabel: the control is the prompt itself
        control_accuracy.append(_accuracy(shown, prompts))
        for layer, hook in zip(layers, hooks, strict=True):
            states[layer].append(got.states[hook])
            control[layer].append(shown.states[hook])
    extra = RandomLabelStates(control, control_accuracy) if random_labels else None
    return IclStates(list(ks), list(layers), states, accuracy, n_prompts, extra)


def save_icl_states(states: IclStates, path: str | Path) -> None:
    """Write the states to a safetensors file (tensor ``layer{L}_k{k}``, the control's
    ``random_labels_layer{L}_k{k}``; ks, layers, accuracies and n_prompts as JSON metadata),
    so other BAE settings can be tried without the model."""
    tensors = {
        f"layer{layer}_k{k}": x.contiguous()
        for layer in states.layers
        for k, x in zip(states.ks, states.states[layer], strict=True)
    }
    meta = {"ks": states.ks, "layers": states.layers, "accuracy": states.accuracy,
            "n_prompts": states.n_prompts}  # fmt: skip
    if states.random_labels is not None:
        meta["random_labels_accuracy"] = states.random_labels.accuracy
        for layer in states.layers:
            for k, x in zip(states.ks, states.random_labels.states[layer], strict=True):
                tensors[f"random_labels_layer{layer}_k{k}"] = x.contiguous().clone()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"bae_lens_icl_states": json.dumps(meta)})


def load_icl_states(path: str | Path) -> IclStates:
    """Read a file written by :func:`save_icl_states`; ValueError on any other file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("bae_lens_icl_states")
            if raw is None:
                raise ValueError(f"{str(path)!r} is not an ICL states file of bae_lens")
            meta = json.loads(raw)

            def read(prefix: str) -> dict[int, list[Tensor]]:
                return {
                    layer: [f.get_tensor(f"{prefix}layer{layer}_k{k}") for k in meta["ks"]]
                    for layer in meta["layers"]
                }

            states = read("")
            control = None
            if "random_labels_accuracy" in meta:
                control = RandomLabelStates(read("random_labels_"), meta["random_labels_accuracy"])
    except (OSError, SafetensorError, json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"cannot read ICL states from {str(path)!r}: {err}") from err
    return IclStates(
        meta["ks"], meta["layers"], states, meta["accuracy"], meta["n_prompts"], control
    )


class RandomLabelCurve(NamedTuple):
    """The random-label control's curve, read with the same BAE per layer as the real one."""

    entropy_bits: dict[int, list[float]]
    """layer -> entropy of the set of n_prompts control states, per k."""
    n_informative: dict[int, list[int]]
    """layer -> bits with Hb > threshold, per k."""
    accuracy: list[float]
    """Per k: fraction of control prompts where the query's true label word has the larger
    logit."""


RANDOM_LABELS_NOTE = (
    "the same prompts (demonstrations, k, query, token length) with each demonstration's "
    "label drawn uniformly from (negative, positive), seeded; the BAE of each layer is "
    "trained on the real and the control states pooled; at k = 0 the control is the real set"
)


class IclCurve(NamedTuple):
    """Entropy (bits) of the label-prefix states per layer and k, and the model's accuracy."""

    ks: list[int]
    layers: list[int]
    entropy_bits: dict[int, list[float]]
    """layer -> entropy of the set of n_prompts label-prefix states, per k."""
    n_informative: dict[int, list[int]]
    """layer -> bits with Hb > threshold, per k."""
    accuracy: list[float]
    """Per k: fraction of prompts where the true label word has the larger logit."""
    n_prompts: int
    convergence: dict[int, dict[str, Any]] | None = None
    """layer -> how its BAE's training ended (None: BAEs were given)."""
    random_labels: RandomLabelCurve | None = None
    """The control with random demonstration labels, when its states were collected."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (layer keys as strings)."""
        extra: dict[str, Any] = {} if self.convergence is None else {
            "convergence": {str(la): c for la, c in self.convergence.items()}
        }  # fmt: skip
        if self.random_labels is not None:
            control = self.random_labels
            extra["random_labels"] = {
                "description": RANDOM_LABELS_NOTE,
                "accuracy": [round(a, 4) for a in control.accuracy],
                "entropy_bits": {str(la): [round(v, 3) for v in vs] for la, vs in control.entropy_bits.items()},
                "n_informative": {str(la): vs for la, vs in control.n_informative.items()},
            }  # fmt: skip
        return extra | {
            "ks": self.ks,
            "layers": self.layers,
            "n_prompts": self.n_prompts,
            "accuracy": [round(a, 4) for a in self.accuracy],
            "entropy_bits": {str(la): [round(v, 3) for v in vs] for la, vs in self.entropy_bits.items()},
            "n_informative": {str(la): vs for la, vs in self.n_informative.items()},
        }  # fmt: skip


def icl_entropy_curve(
    states: IclStates,
    *,
    saes: dict[int, Any] | None = None,
    expansion: int = 4,
    seed: int = 0,
    progress: bool = False,
    **train_options: Any,
) -> IclCurve:
    """Entropy of the label-prefix hidden state per layer, for each k (and for the
    random-label control when ``states`` hold it).

    Unless ``saes`` gives a BAE per layer, one BAE of ``expansion * d_model`` bits is
    trained per layer on every set pooled: the states of all k, plus the control's at
    k > 0 (its k = 0 set is the real one, not counted twice), so every set is measured with
    the same code (:func:`bae_lens.entropy.train_set_bae` with ``train_options``).
    """
    if saes is not None and set(saes) != set(states.layers):
        raise ValueError(
            f"saes are given for layers {sorted(saes)}, not for {sorted(states.layers)}"
        )
    control = states.random_labels
    entropy: dict[int, list[float]] = {}
    informative: dict[int, list[int]] = {}
    control_entropy: dict[int, list[float]] = {}
    control_informative: dict[int, list[int]] = {}
    convergence: dict[int, dict[str, Any]] = {}
    train_options.setdefault("early_stop", True)
    for layer in states.layers:
        if saes is not None:
            sae = saes[layer]
        else:
            sets = list(states.states[layer])
            if control is not None:
                sets += [x for k, x in zip(states.ks, control.states[layer], strict=True) if k > 0]
            pooled = torch.cat(sets)  # [n_sets * n_prompts, d_model]
            sae = train_set_bae(
                pooled, expansion * pooled.shape[1], seed=seed, progress=progress, **train_options
            )
            convergence[layer] = sae.convergence.to_dict()
        estimates = [estimate_entropy(sae, x) for x in states.states[layer]]
        entropy[layer] = [e.entropy_bits for e in estimates]
        informative[layer] = [e.n_informative for e in estimates]
        if control is not None:
            estimates = [estimate_entropy(sae, x) for x in control.states[layer]]
            control_entropy[layer] = [e.entropy_bits for e in estimates]
            control_informative[layer] = [e.n_informative for e in estimates]
    return IclCurve(
        states.ks, states.layers, entropy, informative, states.accuracy, states.n_prompts,
        convergence if saes is None else None,
        None if control is None else RandomLabelCurve(
            control_entropy, control_informative, control.accuracy
        ),
    )  # fmt: skip


def plot_icl_curve(curve: IclCurve, model_name: str, path: str) -> None:
    """Entropy per k (one line per layer) beside the accuracy per k, as a PNG; the
    random-label control, when present, as dashed lines of the same colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.get_cmap("viridis")
    control = curve.random_labels
    for i, layer in enumerate(curve.layers):
        color = colors(i / max(1, len(curve.layers) - 1))
        ax.plot(curve.ks, curve.entropy_bits[layer], "o-", color=color, label=f"layer {layer}")
        if control is not None:
            ax.plot(curve.ks, control.entropy_bits[layer], "x--", color=color, alpha=0.8)
    handles, _ = ax.get_legend_handles_labels()
    if control is not None:
        handles.append(Line2D([], [], color="gray", ls="--", marker="x", label="random labels"))
    ax.set(xlabel="k (demonstrations)", ylabel="entropy at the label-prefix token (bits)",
           title=f"{model_name}: {curve.n_prompts} prompts per k")  # fmt: skip
    ax.legend(handles=handles, fontsize=7, ncol=2)
    se = 0.5 / curve.n_prompts**0.5
    ax2.errorbar(curve.ks, curve.accuracy, yerr=[2 * se] * len(curve.ks), fmt="o-", capsize=3,
                 label="true labels")  # fmt: skip
    if control is not None:
        ax2.errorbar(curve.ks, control.accuracy, yerr=[2 * se] * len(curve.ks), fmt="x--",
                     capsize=3, color="gray", label="random labels")  # fmt: skip
        ax2.legend(fontsize=8)
    ax2.set(xlabel="k", ylabel='accuracy (" positive" vs " negative")', ylim=(0, 1),
            title="choice between the label words (bars: 2 s.e. at p = 0.5)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
