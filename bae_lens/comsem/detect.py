"""An LLM-free ComSem score: can a simple classifier detect a feature's tokens?

A judge is slow, needs an endpoint and may not be trustworthy (see
:mod:`bae_lens.comsem.calibrate`). This score needs neither: it asks whether a feature's
samples share something visible in the token and its neighbours that other features'
samples lack (issue 13, item 3; the "detection" form of automated interpretability scoring).

For a feature j with n collected samples (corpus order) and ``n`` negatives drawn from the
other features' samples (never a token j was assigned, nor one it fires on when
``members`` is known):

1. every sample becomes a set of string features of its marked token t:
   the token lower-cased, the token as written, its last 2 and 3 letters, its shape
   (upper / lower / digit / punctuation runs, e.g. ``Xx``, ``d``, ``p``), whether it starts
   a word with a space, and the word before and the word after it in the context;
2. a multinomial naive Bayes classifier with add-one smoothing is fit on the first half of
   the positives and the first half of the negatives:
   log-odds(x) = sum_{f in x} log((c_pos(f) + 1) / (N_pos + V)) - log((c_neg(f) + 1) / (N_neg + V)),
   c the feature counts, N their totals, V the training vocabulary;
3. detection = AUROC of the log-odds on the held-out halves (held-out positives vs
   held-out negatives; ties count 1/2).

0.5 means the feature's tokens look like anyone else's (a random feature); 1.0 means they
are told apart perfectly. It rewards features a reader could spot from the token and its
immediate context (a word, a suffix, a shape, a neighbour); a feature whose common meaning
spans many surface forms (e.g. "emotions") scores lower than a judge would give it. It is
deterministic given the seed, costs milliseconds per feature, and is reported beside the
judge's score for every dictionary.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence

from bae_lens.comsem.collect import Collection, Sample

_WORD = re.compile(r"[A-Za-z0-9']+|[^\sA-Za-z0-9]")


def _shape(core: str) -> str:
    runs: list[str] = []
    for ch in core:
        kind = "X" if ch.isupper() else "x" if ch.isalpha() else "d" if ch.isdigit() else "p"
        if not runs or runs[-1] != kind:
            runs.append(kind)
    return "".join(runs) or "_"


def sample_features(sample: Sample) -> set[str]:
    """String features of a sample's marked token (see the module docstring).

    >>> sorted(sample_features(Sample(0, 1, " quickly", "he ran<< quickly>> home")))
    ['after=home', 'before=ran', 'lower=quickly', 'raw= quickly', 'shape=x', 'space=1', 'suf2=ly', 'suf3=tly']
    """
    token = sample.token.replace("\n", " ")
    core = token.strip()
    lower = core.lower()
    marker = f"<<{token}>>"
    at = sample.context.find(marker)
    before, after = (
        (sample.context[:at], sample.context[at + len(marker) :]) if at >= 0 else ("", "")
    )
    words_before, words_after = _WORD.findall(before), _WORD.findall(after)
    return {
        f"lower={lower}",
        f"raw={token}",
        f"suf2={lower[-2:]}",
        f"suf3={lower[-3:]}",
        f"shape={_shape(core)}",
        f"space={int(token[:1] == ' ')}",
        f"before={words_before[-1].lower() if words_before else ''}",
        f"after={words_after[0].lower() if words_after else ''}",
    }


def _log_odds(positives: list[set[str]], negatives: list[set[str]]) -> dict[str, float] | None:
    pos, neg = Counter(f for x in positives for f in x), Counter(f for x in negatives for f in x)
    vocab = set(pos) | set(neg)
    n_pos, n_neg, v = sum(pos.values()), sum(neg.values()), len(vocab)
    if v == 0:
        return None
    weights = {
        f: math.log((pos[f] + 1) / (n_pos + v)) - math.log((neg[f] + 1) / (n_neg + v))
        for f in vocab
    }
    weights[""] = math.log(1 / (n_pos + v)) - math.log(1 / (n_neg + v))  # an unseen feature
    return weights


def _auroc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def detection_score(positives: Sequence[Sample], negatives: Sequence[Sample]) -> float | None:
    """Held-out AUROC of naive Bayes fit on the first half of each list (None: too few)."""
    if len(positives) < 2 or len(negatives) < 2:
        return None
    pos = [sample_features(x) for x in positives]
    neg = [sample_features(x) for x in negatives]
    hp, hn = len(pos) // 2, len(neg) // 2
    weights = _log_odds(pos[:hp], neg[:hn])
    if weights is None:
        return None

    def score(x: set[str]) -> float:
        return sum(weights.get(f, weights[""]) for f in x)

    return _auroc([score(x) for x in pos[hp:]], [score(x) for x in neg[hn:]])


def detection_scores(
    coll: Collection,
    features: Sequence[int],
    *,
    seed: int = 0,
    members: Mapping[int, set[tuple[int, int]]] | None = None,
    negatives_per_positive: int = 1,
) -> dict[int, float | None]:
    """Feature -> its detection score (None when it has fewer than 2 samples).

    Negatives: ``negatives_per_positive`` times as many samples of other features as the
    feature has, drawn with ``seed`` (the same draw for a feature whatever else is asked)."""
    pool = [(j, x) for j, xs in coll.samples.items() for x in xs]
    out: dict[int, float | None] = {}
    for j in features:
        own = coll.samples.get(j, [])
        excluded = {(x.sequence, x.position) for x in own}
        if members is not None:
            excluded |= members.get(j, set())
        candidates = [x for i, x in pool if i != j and (x.sequence, x.position) not in excluded]
        rng = random.Random(seed * 1_000_003 + j)
        negatives = rng.sample(candidates, min(len(candidates), negatives_per_positive * len(own)))
        out[j] = detection_score(own, negatives)
    return out


def mean_detection(scores: Mapping[int, float | None]) -> float | None:
    """Mean over the features that have a score."""
    kept = [x for x in scores.values() if x is not None]
    return sum(kept) / len(kept) if kept else None
