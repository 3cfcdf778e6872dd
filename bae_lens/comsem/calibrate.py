"""Judge calibration: can this judge tell a real feature from a random one?

ComSem's score means something only if the judge says Yes to a feature's own tokens and No
to other tokens. Calibration measures that on features whose truth is known, made from the
corpus itself (issue 13, item 1):

- **true features**, each firing exactly on one token class of the tokenized corpus
  (:data:`TOKEN_CLASSES`): digits, capitalised words, sentence-final punctuation, personal
  pronouns, prepositions, whole words ending in -ly, whole words ending in -ing, and the
  names of the novels' characters (:data:`CHARACTER_NAMES`, each checked to occur in the
  embedded corpus);
- **random features**, each firing on a random set of tokens as large as one true
  feature's (so firing rates match).

Each feature keeps ``max_samples`` of its tokens (drawn at random, kept in corpus order) as
a :class:`~bae_lens.comsem.collect.Collection`, and goes through ComSem's own path
(:func:`~bae_lens.comsem.score.judge_collection`): describe the first m samples, test the
held-out ones (hit rate = score) and other features' samples (false-positive rate, FPR).
Negatives never include a token the feature fires on, so an FPR is a real false positive.

Per feature, gap = score - FPR; a feature the judge could not describe, or whose answers
were all malformed, has gap 0 (no evidence either way). The judge's separation is

    AUROC = P(gap of a true feature > gap of a random one)   (ties count 1/2)

and the mean gap of each group. A judge is **usable** when AUROC >= :data:`USABLE_AUROC`
(0.8); a judge that says Yes to everything scores 0.5. Verdicts are kept in a small JSON
file keyed by the judge's model name (:func:`record_verdict`), which every ComSem table
reads (:func:`verdict_line`).

The same features check the LLM-free score (:mod:`bae_lens.comsem.detect`): its AUROC of
true vs random features is reported beside the judge's.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from bae_lens.comsem.collect import Collection, Sample, token_context
from bae_lens.comsem.detect import detection_scores
from bae_lens.comsem.score import (
    PROMPT_VERSION,
    ComSemSettings,
    FeatureResult,
    judge_collection,
)

logger = logging.getLogger(__name__)

USABLE_AUROC = 0.8
"""A judge whose AUROC of (score - FPR), true vs random features, is below this is not
trusted: its ComSem scores do not tell a real feature from noise."""

REGISTRY = Path(__file__).resolve().parents[2] / "benchmarks/results/comsem/calibration/judges.json"
"""Default verdict file (in the repository; pass another path when installed elsewhere)."""

PRONOUNS = frozenset((
    "i", "me", "my", "mine", "myself", "you", "your", "yours", "yourself", "yourselves",
    "he", "him", "his", "himself", "she", "her", "hers", "herself", "it", "its",
    "itself", "we", "us", "our", "ours", "ourselves", "they", "them", "their", "theirs",
    "themselves"
))  # fmt: skip
PREPOSITIONS = frozenset((
    "of", "in", "on", "at", "by", "with", "from", "into", "upon", "about", "after",
    "before", "under", "over", "through", "between", "among", "without", "within",
    "towards", "toward", "against", "across", "behind", "beyond", "beneath", "above",
    "below", "near", "around", "along", "amongst", "throughout"
))  # fmt: skip
CHARACTER_NAMES = frozenset((
    "Anne", "Catherine", "Collins", "Crawford", "Edmund", "Edward", "Elizabeth", "Emma",
    "Harriet", "Henry", "Herbert", "Isabella", "Jane", "Joe", "John", "Lucy", "Maria",
    "Marianne", "Martin", "Mary", "Norris", "Perry", "Pip", "Robert", "Russell",
    "Thomas", "William"
))  # fmt: skip
"""Characters of the novels in the embedded corpus, each seen as one SmolLM2 token in its
eval split (Austen's, and Pip, Joe and Herbert of Great Expectations); with another
tokenizer, only those that are one token can fire."""

ABBREVIATIONS = ("Mr", "Mrs", "Dr", "St", "Ms")
QUOTES = "\"'\u201d\u2019"


def _word_start(token: str, before: str) -> bool:
    return token[:1] == " " or not before[-1:].isalnum()


def _word_end(after: str) -> bool:
    return not after[:1].isalpha()


def _whole_word(token: str, before: str, after: str) -> bool:
    core = token.strip()
    return core.isalpha() and _word_start(token, before) and _word_end(after)


def _digits(token: str, before: str, after: str) -> bool:
    core = token.strip()
    return core != "" and core.isdigit()


def _capitalised(token: str, before: str, after: str) -> bool:
    core = token.strip()
    return core.isalpha() and core[0].isupper() and _word_start(token, before)


def _sentence_final(token: str, before: str, after: str) -> bool:
    core = token.strip().rstrip(QUOTES)
    if core not in (".", "!", "?"):
        return False
    return not (core == "." and before.rstrip().endswith(ABBREVIATIONS))


def _pronoun(token: str, before: str, after: str) -> bool:
    return _whole_word(token, before, after) and token.strip().lower() in PRONOUNS


def _preposition(token: str, before: str, after: str) -> bool:
    return _whole_word(token, before, after) and token.strip().lower() in PREPOSITIONS


def _ly(token: str, before: str, after: str) -> bool:
    core = token.strip().lower()
    return _whole_word(token, before, after) and len(core) >= 4 and core.endswith("ly")


def _ing(token: str, before: str, after: str) -> bool:
    core = token.strip().lower()
    return _whole_word(token, before, after) and len(core) >= 5 and core.endswith("ing")


def _name(token: str, before: str, after: str) -> bool:
    return _whole_word(token, before, after) and token.strip() in CHARACTER_NAMES


class TokenClass(NamedTuple):
    """A ground-truth feature: fires where ``fires(token, text before, text after)``."""

    name: str
    description: str
    fires: Callable[[str, str, str], bool]


TOKEN_CLASSES: tuple[TokenClass, ...] = (
    TokenClass("digits", "digits: numbers written with numerals", _digits),
    TokenClass("capitalised", "capitalised words: words starting with an uppercase letter",
               _capitalised),
    TokenClass("sentence_final", "sentence-final punctuation: a full stop, question mark or "
               "exclamation mark that ends a sentence", _sentence_final),
    TokenClass("pronouns", "personal pronouns such as I, me, he, her, it, they, their",
               _pronoun),
    TokenClass("prepositions", "prepositions such as of, in, with, from, upon", _preposition),
    TokenClass("ly_words", "words ending in -ly", _ly),
    TokenClass("ing_words", "words ending in -ing", _ing),
    TokenClass("names", "names of characters in the novels", _name),
)  # fmt: skip
"""The ground-truth classes; each reads only the token and the characters next to it."""

CLASS_NAMES = tuple(c.name for c in TOKEN_CLASSES)


@dataclass
class CalibrationSet:
    """Ground-truth and random features of one tokenized corpus, as a ComSem collection."""

    collection: Collection
    labels: list[str]
    """Feature -> its class name, or ``random_<class>`` for a random one of that size."""
    is_true: list[bool]
    members: dict[int, set[tuple[int, int]]]
    """Feature -> every (sequence, position) it fires on."""


def token_pieces(tokenizer: Any, tokens: Int[Tensor, "n pos"]) -> list[list[str]]:
    """Each token id decoded on its own (one decode per distinct id)."""
    pieces: dict[int, str] = {}
    rows = tokens.tolist()
    for row in rows:
        for i in row:
            if i not in pieces:
                pieces[i] = tokenizer.decode([i])
    return [[pieces[i] for i in row] for row in rows]


def class_members(
    pieces: list[list[str]],
    skip: Sequence[bool] | None = None,
    classes: Sequence[TokenClass] = TOKEN_CLASSES,
) -> dict[str, list[tuple[int, int]]]:
    """Class name -> the (sequence, position) of every token in it, in corpus order.

    ``skip[i]`` per flat token (default none): special tokens, never members."""
    out: dict[str, list[tuple[int, int]]] = {c.name: [] for c in classes}
    flat = 0
    for s, row in enumerate(pieces):
        for p, token in enumerate(row):
            if skip is None or not skip[flat]:
                before = row[p - 1] if p > 0 else ""
                after = row[p + 1] if p + 1 < len(row) else ""
                for c in classes:
                    if c.fires(token, before, after):
                        out[c.name].append((s, p))
            flat += 1
    return out


def build_calibration_set(
    tokenizer: Any,
    tokens: Int[Tensor, "n pos"],
    *,
    classes: Sequence[str] = CLASS_NAMES,
    n_random: int | None = None,
    max_samples: int = 40,
    min_members: int = 14,
    skip_token_ids: Sequence[int] | None = None,
    seed: int = 0,
    context_left: int = 24,
    context_right: int = 6,
) -> CalibrationSet:
    """True features for ``classes`` (those with at least ``min_members`` tokens), then
    ``n_random`` random features (default: one per true feature, each the size of a true
    one, cycling through them). Samples: ``max_samples`` members drawn with ``seed``, in
    corpus order. Example::

        cal = build_calibration_set(tok, tokens, classes=["digits", "names"])
        cal.labels   # ['digits', 'names', 'random_digits', 'random_names']
    """
    unknown = [c for c in classes if c not in CLASS_NAMES]
    if unknown or not classes:
        raise ValueError(f"classes={list(classes)}: each must be one of {list(CLASS_NAMES)}")
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [n_sequences, context], got {tuple(tokens.shape)}")
    if skip_token_ids is None:
        skip_token_ids = list(getattr(tokenizer, "all_special_ids", []) or [])
    skip = torch.isin(tokens, torch.tensor(list(skip_token_ids), dtype=tokens.dtype))
    pieces = token_pieces(tokenizer, tokens)
    chosen = [c for c in TOKEN_CLASSES if c.name in classes]
    found = class_members(pieces, skip.reshape(-1).tolist(), chosen)
    for name, places in found.items():
        if len(places) < min_members:
            logger.warning(
                "class %s has %d tokens (< %d): left out", name, len(places), min_members
            )
    true = [(n, found[n]) for n in classes if len(found[n]) >= min_members]
    if not true:
        raise ValueError(f"no class of {list(classes)} has {min_members} tokens in this corpus")
    rng = random.Random(seed)
    everything = [tuple(x) for x in (~skip).nonzero().tolist()]
    n_random = len(true) if n_random is None else n_random
    randoms = []
    for i in range(n_random):
        name, places = true[i % len(true)]
        randoms.append((f"random_{name}", sorted(rng.sample(everything, len(places)))))
    features = true + randoms
    rows = tokens.tolist()
    samples: dict[int, list[Sample]] = {}
    for j, (_, places) in enumerate(features):
        kept = sorted(rng.sample(places, min(max_samples, len(places))))
        samples[j] = [
            Sample(s, p, *token_context(tokenizer, rows[s], p, context_left, context_right))
            for s, p in kept
        ]
    n_tokens = int((~skip).sum())
    coll = Collection(
        name="calibration",
        score="ground-truth",
        k=1,
        n_tokens=n_tokens,
        firing_rates=[len(p) / n_tokens for _, p in features],
        sample_counts=[len(p) for _, p in features],
        samples=samples,
    )
    return CalibrationSet(
        collection=coll,
        labels=[n for n, _ in features],
        is_true=[j < len(true) for j in range(len(features))],
        members={j: set(p) for j, (_, p) in enumerate(features)},
    )


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(a positive's value > a negative's), ties counting 1/2 (Mann-Whitney U / n m).

    >>> auroc([0.9, 0.8], [0.1, 0.8])
    0.875
    """
    if not positives or not negatives:
        raise ValueError(f"auroc needs both groups: {len(positives)} and {len(negatives)}")
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def auroc_interval(
    positives: Sequence[float], negatives: Sequence[float], resamples: int = 2000, seed: int = 0
) -> list[float]:
    """Percentile bootstrap 95% interval of :func:`auroc`, each group resampled with
    replacement on its own (with 8 features a group the interval is wide: say so rather
    than quote the point value alone).

    >>> auroc_interval([0.9, 0.8, 0.7], [0.1, 0.2, 0.3])
    [1.0, 1.0]
    """
    if not positives or not negatives:
        raise ValueError(f"auroc needs both groups: {len(positives)} and {len(negatives)}")
    rng = np.random.default_rng(seed)
    pos, neg = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
    p = pos[rng.integers(0, len(pos), size=(resamples, len(pos)))]  # [resamples, n_pos]
    n = neg[rng.integers(0, len(neg), size=(resamples, len(neg)))]  # [resamples, n_neg]
    wins = (p[:, :, None] > n[:, None, :]) + 0.5 * (p[:, :, None] == n[:, None, :])
    low, high = np.percentile(wins.mean((1, 2)), [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


def feature_gap(result: FeatureResult) -> float:
    """score - FPR; 0 when either is unmeasured (no description, or only malformed answers)."""
    if result.score is None or result.false_positive_rate is None:
        return 0.0
    return result.score - result.false_positive_rate


def _mean(xs: Sequence[float | None]) -> float | None:
    kept = [x for x in xs if x is not None]
    return sum(kept) / len(kept) if kept else None


@dataclass
class CalibrationResult:
    judge_model: str
    auroc: float
    """AUROC of score - FPR, true vs random features."""
    usable: bool
    bar: float
    n_true: int
    n_random: int
    groups: dict[str, dict[str, float | None]]
    """"true" / "random" -> mean gap, mean score, mean FPR, mean LLM-free detection."""
    llm_free_auroc: float
    """AUROC of the LLM-free detection score, true vs random features."""
    auroc_interval: list[float] = field(default_factory=list)
    """Bootstrap 95% interval of ``auroc`` (features resampled within each group)."""
    features: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "usable" if self.usable else "NOT usable"

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"verdict": self.verdict}


def calibrate(
    cal: CalibrationSet,
    judge: Any,
    settings: ComSemSettings,
    *,
    judge_model: str | None = None,
    bar: float = USABLE_AUROC,
) -> CalibrationResult:
    """Judge every feature of ``cal`` with ComSem's path and measure the separation."""
    coll = cal.collection
    features = sorted(coll.samples)
    results = judge_collection(coll, judge, settings, features, members=cal.members)
    detection = detection_scores(coll, features, seed=settings.seed, members=cal.members)
    rows: list[dict[str, Any]] = []
    for r in results:
        rows.append(
            {
                "feature": r.feature,
                "label": cal.labels[r.feature],
                "true": cal.is_true[r.feature],
                "n_members": coll.sample_counts[r.feature],
                "description": r.description,
                "status": r.status,
                "score": r.score,
                "false_positive_rate": r.false_positive_rate,
                "gap": feature_gap(r),
                "llm_free_detection": detection[r.feature],
            }
        )
    groups: dict[str, dict[str, float | None]] = {}
    for group, want in (("true", True), ("random", False)):
        mine = [x for x in rows if x["true"] is want]
        groups[group] = {
            key: _mean([x[key] for x in mine])
            for key in ("gap", "score", "false_positive_rate", "llm_free_detection")
        }
    true_rows = [x for x in rows if x["true"]]
    random_rows = [x for x in rows if not x["true"]]
    value = auroc([x["gap"] for x in true_rows], [x["gap"] for x in random_rows])
    interval = auroc_interval([x["gap"] for x in true_rows], [x["gap"] for x in random_rows],
                              seed=settings.seed)  # fmt: skip

    def free_score(x: dict[str, Any]) -> float:  # too few samples to score: chance
        return 0.5 if x["llm_free_detection"] is None else float(x["llm_free_detection"])

    free = auroc([free_score(x) for x in true_rows], [free_score(x) for x in random_rows])
    model = judge_model or getattr(getattr(judge, "config", None), "model", None) or "unknown"
    return CalibrationResult(
        judge_model=model,
        auroc=value,
        usable=value >= bar,
        bar=bar,
        n_true=len(true_rows),
        n_random=len(random_rows),
        groups=groups,
        llm_free_auroc=free,
        auroc_interval=interval,
        features=rows,
        settings=asdict(settings) | {"prompt_version": PROMPT_VERSION},
    )


def _interval(result: CalibrationResult) -> str:
    if not result.auroc_interval:
        return "not computed"
    low, high = result.auroc_interval
    return f"{low:.2f}-{high:.2f}"


def markdown(result: CalibrationResult) -> str:
    """The calibration table: one line per feature, then both groups and the verdict."""

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = [
        f"Judge calibration of {result.judge_model}: AUROC of (score - FPR), true vs random "
        f"features = {result.auroc:.3f} (bootstrap 95% interval {_interval(result)}; "
        f"{result.n_true} true, {result.n_random} random); "
        f"bar {result.bar}: **{result.verdict}**. LLM-free detection AUROC "
        f"{result.llm_free_auroc:.3f}.",
        "",
        "| feature | true | tokens | judge's description | score | FPR | score - FPR "
        "| LLM-free detection |",
        "|" + "---|" * 8,
    ]
    for x in result.features:
        description = (x["description"] or f"({x['status']})").replace("|", "/")
        cells = [x["label"], "yes" if x["true"] else "no", x["n_members"], description,
                 x["score"], x["false_positive_rate"], x["gap"], x["llm_free_detection"]]  # fmt: skip
        lines.append("| " + " | ".join(fmt(c) for c in cells) + " |")
    lines += ["", "| group | mean score | mean FPR | mean score - FPR | mean LLM-free detection |",
              "|---|---|---|---|---|"]  # fmt: skip
    for group, g in result.groups.items():
        cells = [group, g["score"], g["false_positive_rate"], g["gap"], g["llm_free_detection"]]
        lines.append("| " + " | ".join(fmt(c) for c in cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------ the verdict file
def load_registry(path: str | Path = REGISTRY) -> dict[str, dict[str, Any]]:
    """Judge model name -> its latest calibration summary ({} when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()))


def record_verdict(
    result: CalibrationResult, path: str | Path = REGISTRY, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``result``'s summary under its judge's model name (replacing an older one)."""
    entry = {
        "auroc": round(result.auroc, 4),
        "bar": result.bar,
        "usable": result.usable,
        "verdict": result.verdict,
        "n_true": result.n_true,
        "n_random": result.n_random,
        "mean_gap_true": result.groups["true"]["gap"],
        "mean_gap_random": result.groups["random"]["gap"],
        "llm_free_auroc": round(result.llm_free_auroc, 4),
        "auroc_interval": result.auroc_interval,
        "prompt_version": PROMPT_VERSION,
    } | dict(extra or {})
    registry = load_registry(path)
    registry[result.judge_model] = entry
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(registry, indent=1, sort_keys=True) + "\n")
    return entry


def verdict_line(judge_model: str, path: str | Path = REGISTRY) -> str:
    """One line for a ComSem table: the judge's calibration verdict, or that it has none."""
    entry = load_registry(path).get(judge_model)
    if entry is None:
        return (
            f"Judge calibration: none recorded for {judge_model} "
            "(run `bae-lens comsem --calibrate` with this judge before trusting its scores)."
        )
    line = (
        f"Judge calibration: {judge_model} is **{entry['verdict']}** (AUROC of score - FPR, "
        f"true vs random features, {entry['auroc']:.3f}; bar {entry['bar']}; "
        f"{entry['n_true']} true and {entry['n_random']} random features)."
    )
    version = entry.get("prompt_version", 1)
    if version != PROMPT_VERSION:
        line += (
            f" That calibration used ComSem prompt v{version}, not the current v"
            f"{PROMPT_VERSION}: re-calibrate before trusting the verdict."
        )
    return line
