"""ComSem interpretation and test (BAE_METHOD.md section 5), with a specificity control.

For each judged feature (one with at least m + 1 samples, m = 5):

1. interpretation: its first m samples (corpus order) go to the judge, which must answer
   with one concise, specific linguistic description of what the marked tokens share;
2. test: up to ``n_test`` (8) of its remaining samples are shown one at a time with the
   description; the judge answers Yes or No. score = fraction of Yes (the hit rate);
3. specificity control (not in the paper, whose test has no negatives): ``n_negative``
   held-out samples of OTHER features (never a token this feature was assigned) are shown
   the same way; their fraction of Yes is the false-positive rate.

A description that is missing, malformed or generic ("words", "subword tokens") counts as a
failed interpretation: score 0 and not tested. A Yes/No answer that is neither is recorded
as malformed and left out of both rates. The prompts are bae_lens's own.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bae_lens.comsem.collect import Collection, Sample
from bae_lens.comsem.detect import detection_scores, mean_detection
from bae_lens.comsem.judge import Judge, Messages

logger = logging.getLogger(__name__)

SYSTEM = (
    "You are a careful linguist who studies the internal features of a language model. "
    "A feature is active on certain tokens of English text. You describe what those tokens "
    "have in common and you check descriptions against new examples."
)

INTERPRET = """Here are {m} passages. In each, the token where the feature is active is marked like <<this>>.

{examples}

What do the marked tokens have in common? Answer with ONE concise, specific linguistic description of at most 15 words: name their shared meaning, word class, grammatical role, or surrounding context. Do not give generic answers such as "words" or "tokens", and do not describe tokenization such as "subwords" or "parts of words".
Reply with one line that starts with "Description:"."""

TEST = """Description of a feature: {description}

Passage: {context}

In the passage, one token is marked with << and >>. Is that marked token an example of the description above? Start your reply with Yes or No."""
PROMPT_VERSION = 2
"""Recorded with every ComSem and calibration result. 1: the test asked whether "the token
marked <<like this>> match[es] this description", passage first; Qwen2.5-Coder-1.5B read
that literally and said No to 254 of 255 tests, its descriptions right. 2: description
first, then the passage, then a question that names the markers."""

GENERIC = re.compile(
    r"^(the |all |various |common |random |different |english |some )*"
    r"(words?|tokens?|text|letters?|characters?|subwords?|word pieces?|parts of words?)\W*$",
    re.IGNORECASE,
)
TOKENIZER_LEVEL = re.compile(
    r"\b(sub-?words?|word ?pieces?|byte[- ]pair|bpe|tokeni[sz]\w*|token fragments?)\b",
    re.IGNORECASE,
)


def interpret_messages(samples: list[Sample]) -> Messages:
    examples = "\n".join(f"{i}. {s.context}" for i, s in enumerate(samples, 1))
    user = INTERPRET.format(m=len(samples), examples=examples)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def test_messages(description: str, sample: Sample) -> Messages:
    user = TEST.format(description=description, context=sample.context)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_description(text: str | None) -> tuple[str | None, str]:
    """(description, status): status is "ok", "missing", "generic" or "tokenizer-level"."""
    if not text or not text.strip():
        return None, "missing"
    match = re.search(r"description\s*:\s*(.+)", text, re.IGNORECASE)
    line = match.group(1) if match else text.strip().splitlines()[0]
    line = line.strip().strip("*` ").rstrip(".").strip()
    if len(line) > 1 and line[0] == line[-1] and line[0] in "\"'":
        line = line[1:-1].strip().rstrip(".")  # a quoted answer
    if len(line) < 3:
        return None, "missing"
    line = line[:200]
    if GENERIC.match(line):
        return line, "generic"
    if TOKENIZER_LEVEL.search(line):
        return line, "tokenizer-level"
    return line, "ok"


def parse_yes_no(text: str | None) -> bool | None:
    """True / False for Yes / No (first word, else a lone yes or no anywhere); None otherwise."""
    if not text:
        return None
    words = re.findall(r"[a-z]+", text.lower())
    if words and words[0] in ("yes", "no"):
        return words[0] == "yes"
    found = {w for w in words if w in ("yes", "no")}
    return (found.pop() == "yes") if len(found) == 1 else None


@dataclass
class ComSemSettings:
    """How many samples and features each dictionary is judged on."""

    m: int = 5
    """Samples shown for interpretation; a feature needs m + 1 to be judged."""
    n_test: int = 8
    """Held-out samples of the feature tested one by one."""
    n_negative: int = 8
    """Samples of other features mixed in (specificity control)."""
    n_features: int = 30
    """Features judged per dictionary (drawn at random among those with enough samples)."""
    threshold: float = 0.75
    """A feature is "interpretable" when its score is at least this."""
    seed: int = 0
    describe_tokens: int = 40
    """max_tokens of a description answer."""

    def __post_init__(self) -> None:
        for name in ("m", "n_test", "n_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.n_negative < 0:
            raise ValueError(f"n_negative={self.n_negative} must be >= 0")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold={self.threshold} must be in [0, 1]")


@dataclass
class FeatureResult:
    feature: int
    n_samples: int
    firing_rate: float
    description: str | None
    status: str
    """Description status ("ok", "missing", "generic", "tokenizer-level", "error")."""
    positives: list[dict[str, Any]] = field(default_factory=list)
    negatives: list[dict[str, Any]] = field(default_factory=list)
    score: float | None = None
    """Hit rate on the feature's own held-out samples (0 when interpretation failed)."""
    false_positive_rate: float | None = None


def _rate(items: list[dict[str, Any]]) -> float | None:
    votes = [it["yes"] for it in items if it["yes"] is not None]
    return sum(votes) / len(votes) if votes else None


def select_features(coll: Collection, s: ComSemSettings) -> list[int]:
    """``n_features`` features with at least m + 1 samples, drawn with ``seed``."""
    eligible = coll.features_with_samples(s.m + 1)
    rng = random.Random(s.seed)
    return sorted(rng.sample(eligible, min(s.n_features, len(eligible))))


def _negatives(
    coll: Collection,
    feature: int,
    s: ComSemSettings,
    rng: random.Random,
    fires_on: set[tuple[int, int]] | None = None,
) -> list[Sample]:
    own = {(x.sequence, x.position) for x in coll.samples.get(feature, [])} | (fires_on or set())
    pool = [
        x
        for j, xs in coll.samples.items()
        if j != feature and len(xs) > s.m
        for x in xs[s.m :]
        if (x.sequence, x.position) not in own
    ]
    return rng.sample(pool, min(s.n_negative, len(pool)))


def judge_collection(
    coll: Collection,
    judge: Judge,
    s: ComSemSettings,
    features: list[int] | None = None,
    members: Mapping[int, set[tuple[int, int]]] | None = None,
) -> list[FeatureResult]:
    """Interpret and test ``features`` (default :func:`select_features`) of ``coll``.

    ``members``: feature -> every (sequence, position) it fires on, where that is known
    (calibration's ground-truth features): no such token is used as its negative."""
    features = select_features(coll, s) if features is None else features
    rng = random.Random(s.seed + 1)
    results = []
    for j in features:
        samples = coll.samples.get(j, [])
        if len(samples) < s.m + 1:
            raise ValueError(f"feature {j} has {len(samples)} samples; needs m + 1 = {s.m + 1}")
        results.append(FeatureResult(j, coll.sample_counts[j], coll.firing_rates[j], None, "error"))
    first = judge.ask(
        [interpret_messages(coll.samples[r.feature][: s.m]) for r in results],
        s.describe_tokens,
        desc=f"{coll.name}: describe",
    )
    tests: list[tuple[FeatureResult, str, Sample]] = []
    for r, answer in zip(results, first, strict=True):
        if answer.text is None:
            r.status, r.score = "error", 0.0
            continue
        r.description, r.status = parse_description(answer.text)
        if r.status != "ok" or r.description is None:
            r.score = 0.0
            continue
        held_out = coll.samples[r.feature][s.m : s.m + s.n_test]
        tests += [(r, "positives", x) for x in held_out]
        fires_on = members.get(r.feature) if members is not None else None
        tests += [(r, "negatives", x) for x in _negatives(coll, r.feature, s, rng, fires_on)]
    answers = judge.ask(
        [test_messages(r.description or "", x) for r, _, x in tests], 4, desc=f"{coll.name}: test"
    )
    for (r, kind, x), answer in zip(tests, answers, strict=True):
        getattr(r, kind).append(
            {
                "sample": x._asdict(),
                "answer": answer.text,
                "yes": parse_yes_no(answer.text),
                "error": answer.error,
            }
        )
    for r in results:
        if r.status == "ok":
            r.score = _rate(r.positives)
            r.false_positive_rate = _rate(r.negatives)
    return results


BOOTSTRAP_RESAMPLES = 2000


def bootstrap_interval(
    values: list[float], statistic: str, threshold: float = 0.75, seed: int = 0
) -> list[float] | None:
    """Percentile bootstrap 95% interval of a statistic over features (resampled with
    replacement, :data:`BOOTSTRAP_RESAMPLES` times): ``"mean"``, or ``"count"`` of values
    >= ``threshold``. None with fewer than 2 values.

    >>> bootstrap_interval([1.0, 1.0, 1.0], "mean")
    [1.0, 1.0]
    """
    if statistic not in ("mean", "count"):
        raise ValueError(f"statistic={statistic!r} is not one of ['mean', 'count']")
    if len(values) < 2:
        return None
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    picks = data[rng.integers(0, len(data), size=(BOOTSTRAP_RESAMPLES, len(data)))]
    stats = picks.mean(1) if statistic == "mean" else (picks >= threshold).sum(1)
    low, high = np.percentile(stats, [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


def summarise(coll: Collection, results: list[FeatureResult], s: ComSemSettings) -> dict[str, Any]:
    """Per-dictionary report: features with enough samples, mean score, count >= threshold
    (each with a bootstrap 95% interval over the judged features), and the LLM-free
    detection score of the same features (:mod:`bae_lens.comsem.detect`)."""
    scores = [r.score for r in results if r.score is not None]
    fprs = [r.false_positive_rate for r in results if r.false_positive_rate is not None]
    answers = [a for r in results for a in (*r.positives, *r.negatives)]
    both = [  # features with both rates measured
        r.score - r.false_positive_rate
        for r in results
        if r.score is not None and r.false_positive_rate is not None
    ]
    return {
        "n_features": len(coll.sample_counts),
        "n_enough_samples": len(coll.features_with_samples(s.m + 1)),
        "n_judged": len(results),
        "mean_score": sum(scores) / len(scores) if scores else None,
        "n_interpretable": sum(x >= s.threshold for x in scores),
        "threshold": s.threshold,
        "mean_false_positive_rate": sum(fprs) / len(fprs) if fprs else None,
        "mean_score_minus_fpr": sum(both) / len(both) if both else None,
        "mean_score_ci": bootstrap_interval(scores, "mean", seed=s.seed),
        "n_interpretable_ci": bootstrap_interval(scores, "count", s.threshold, seed=s.seed),
        "mean_score_minus_fpr_ci": bootstrap_interval(both, "mean", seed=s.seed),
        **_llm_free(coll, [r.feature for r in results], s),
        "n_failed_descriptions": sum(r.status != "ok" for r in results),
        "n_malformed_answers": sum(a["yes"] is None and a["error"] is None for a in answers),
        "n_failed_requests": sum(a["error"] is not None for a in answers)
        + sum(r.status == "error" for r in results),
        "collection_tokens": coll.n_tokens,
        "collection_tokens_per_second": round(coll.tokens_per_second, 1),
        "score": coll.score,
    }


def results_json(results: list[FeatureResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


def _llm_free(coll: Collection, features: list[int], s: ComSemSettings) -> dict[str, Any]:
    """Mean LLM-free detection over ``features`` with its bootstrap 95% interval."""
    scores = detection_scores(coll, features, seed=s.seed)
    values = [v for v in scores.values() if v is not None]
    return {
        "llm_free_detection": mean_detection(scores),
        "llm_free_detection_ci": bootstrap_interval(values, "mean", seed=s.seed),
        "n_llm_free_scored": len(values),
    }


def summarise_llm_free(coll: Collection, s: ComSemSettings) -> dict[str, Any]:
    """The row of a dictionary judged by no LLM: its LLM-free detection score over the
    features :func:`select_features` picks (judge columns empty)."""
    features = select_features(coll, s)
    return {
        "n_features": len(coll.sample_counts),
        "n_enough_samples": len(coll.features_with_samples(s.m + 1)),
        "n_judged": 0,
        "n_detected": len(features),
        "threshold": s.threshold,
        **_llm_free(coll, features, s),
        "score": coll.score,
    }


def markdown_table(
    rows: dict[str, dict[str, Any]], judge_label: str, verdict: str | None = None
) -> str:
    """One line per dictionary; ``verdict`` (the judge's calibration, see
    :func:`bae_lens.comsem.calibrate.verdict_line`) printed under the judge's name.
    Intervals are bootstrap 95% over the judged features."""

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    def with_ci(value: Any, ci: list[float] | None, digits: int = 3) -> str:
        if value is None or ci is None:
            return fmt(value)
        return f"{fmt(value)} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"

    threshold = next(iter(rows.values()))["threshold"] if rows else 0.75
    head = (
        f"| dictionary | salience | features w/ >= m+1 samples | judged | mean score (hit rate) "
        f"| score >= {threshold} | mean false-positive rate | mean score - FPR "
        "| failed descriptions | malformed answers | LLM-free detection |"
    )
    lines = [f"Judge: {judge_label}"] + ([verdict] if verdict else [])
    lines += ["", head, "|" + "---|" * 11]
    for name, r in rows.items():
        cells = [
            name,
            r["score"],
            f"{r['n_enough_samples']} / {r['n_features']}",
            r["n_judged"],
            with_ci(r.get("mean_score"), r.get("mean_score_ci")),
            with_ci(r.get("n_interpretable"), r.get("n_interpretable_ci"), 0),
            r.get("mean_false_positive_rate"),
            with_ci(r.get("mean_score_minus_fpr"), r.get("mean_score_minus_fpr_ci")),
            r.get("n_failed_descriptions"),
            r.get("n_malformed_answers"),
            with_ci(r.get("llm_free_detection"), r.get("llm_free_detection_ci")),
        ]
        lines.append("| " + " | ".join(fmt(c) for c in cells) + " |")
    lines.append(
        "\nIntervals: bootstrap 95% over the judged (or, LLM-free, the scored) features. "
        "LLM-free detection: held-out "
        "AUROC of a naive Bayes classifier on each feature's tokens vs other features' "
        "(0.5 = chance; bae_lens.comsem.detect)."
    )
    return "\n".join(lines)


def judge_collections(
    collections: Mapping[str, Collection], judge: Judge, settings: ComSemSettings
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Judge every dictionary's collection: its summary row and its per-feature results."""
    rows, features = {}, {}
    for name, coll in collections.items():
        results = judge_collection(coll, judge, settings)
        rows[name] = summarise(coll, results, settings)
        features[name] = results_json(results)
    return rows, features
