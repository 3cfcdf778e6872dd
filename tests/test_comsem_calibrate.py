"""Judge calibration (ground-truth token-class features vs random ones), the LLM-free
detection score and the bootstrap intervals of the ComSem table.

Judges here are in-process stand-ins with the :class:`~bae_lens.comsem.judge.Judge`
``ask`` interface: an oracle that describes and tests by checking the token class, and one
that says Yes to everything. A word-level toy tokenizer keeps the unit tests model-free;
one integration test uses the embedded SmolLM2 tokenizer and corpus."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from bae_lens.comsem.calibrate import (
    CHARACTER_NAMES,
    CLASS_NAMES,
    TOKEN_CLASSES,
    CalibrationSet,
    auroc,
    build_calibration_set,
    calibrate,
    class_members,
    load_registry,
    markdown,
    record_verdict,
    token_pieces,
    verdict_line,
)
from bae_lens.comsem.collect import Collection, Sample
from bae_lens.comsem.detect import detection_score, detection_scores, sample_features
from bae_lens.comsem.judge import Answer
from bae_lens.comsem.score import (
    ComSemSettings,
    FeatureResult,
    bootstrap_interval,
    markdown_table,
    summarise,
    summarise_llm_free,
)

SETTINGS = ComSemSettings(m=5, n_test=8, n_negative=8, n_features=100)


# ---------------------------------------------------------------- token classes
@pytest.mark.parametrize(
    ("token", "before", "after", "expected"),
    [
        (" quickly", " ran", " home", {"ly_words"}),
        (" family", " his", ",", {"ly_words"}),  # literally a word ending in -ly
        (" fly", " a", " ", set()),  # too short to carry the suffix
        (" quick", " a", "ly", set()),  # not a whole word
        (" singing", " was", ".", {"ing_words"}),
        (" king", " the", ".", set()),
        (" wound", " without", "ing", set()),
        ("7", " chapter ", "", {"digits"}),
        (" 12", " of", " men", {"digits"}),
        (".", " home", " She", {"sentence_final"}),
        ('?"', " you", " said", {"sentence_final"}),
        (".", " Mrs", " Smith", set()),  # an abbreviation's full stop
        (",", " home", " and", set()),
        (" Emma", " said", ",", {"capitalised", "names"}),
        (" He", ".", " went", {"capitalised", "pronouns"}),
        (" him", " to", ".", {"pronouns"}),
        (" upon", " fell", " the", {"prepositions"}),
        (" to", " went", " the", set()),  # left out: also the infinitive marker
        (" London", " in", ".", {"capitalised"}),
        ("El", ' said "', "inor", {"capitalised"}),  # the start of a capitalised word
        ("El", " said", "inor", set()),  # glued to the word before: not a word start
        ("inor", "El", ",", set()),
    ],
)
def test_token_classes(token: str, before: str, after: str, expected: set[str]) -> None:
    got = {c.name for c in TOKEN_CLASSES if c.fires(token, before, after)}
    assert got == expected


def test_auroc_hand_computed() -> None:
    assert auroc([0.9, 0.8], [0.1, 0.8]) == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert auroc([1.0], [0.0, 0.0]) == 1.0 and auroc([0.0], [1.0]) == 0.0
    assert auroc([0.3, 0.3], [0.3]) == 0.5
    with pytest.raises(ValueError, match="both groups"):
        auroc([], [1.0])


# ---------------------------------------------------------------- a toy corpus
class WordTokenizer:
    """One id per piece; decode concatenates pieces. Id 0 is BOS (special)."""

    all_special_ids = [0]

    def __init__(self) -> None:
        self.pieces = ["<bos>"]
        self.ids: dict[str, int] = {}

    def id(self, piece: str) -> int:
        if piece not in self.ids:
            self.ids[piece] = len(self.pieces)
            self.pieces.append(piece)
        return self.ids[piece]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.pieces[i] for i in ids)


WORDS = {
    "names": ["Emma", "Edward", "Jane", "Harriet"],
    "pronouns": ["he", "she", "they", "him", "her"],
    "prepositions": ["of", "in", "with", "upon"],
    "ly_words": ["quickly", "only", "really", "softly"],
    "ing_words": ["walking", "nothing", "singing", "reading"],
    "plain": ["house", "went", "said", "the", "a", "dog", "tree", "was", "and", "saw", "red"],
}


def toy_corpus(n_sequences: int = 60, length: int = 32, seed: int = 0) -> tuple[Any, torch.Tensor]:
    """Sentences of random words of every class; a number now and then; BOS first."""
    rng = random.Random(seed)
    tok = WordTokenizer()
    kinds = list(WORDS) + ["plain"] * 6
    rows = []
    for _ in range(n_sequences):
        row = [0]
        start = True
        while len(row) < length:
            if rng.random() < 0.15 and not start:
                row.append(tok.id(rng.choice([".", "!", "?"])))
                start = True
                continue
            if rng.random() < 0.05:
                row.append(tok.id(" " + str(rng.randint(1, 9))))
                continue
            word = rng.choice(WORDS[rng.choice(kinds)])
            if start and word[0].islower():
                word = word.capitalize()
            row.append(tok.id(" " + word))
            start = False
        rows.append(row)
    return tok, torch.tensor(rows)


@pytest.fixture(scope="module")
def toy() -> tuple[Any, torch.Tensor, CalibrationSet]:
    tok, tokens = toy_corpus()
    return tok, tokens, build_calibration_set(tok, tokens, max_samples=30, seed=0)


def test_calibration_set_is_exact(toy: tuple[Any, torch.Tensor, CalibrationSet]) -> None:
    tok, tokens, cal = toy
    n_true = len(CLASS_NAMES)
    assert cal.labels[:n_true] == list(CLASS_NAMES)  # every class has enough tokens here
    assert cal.labels[n_true:] == [f"random_{c}" for c in CLASS_NAMES]
    assert cal.is_true == [True] * n_true + [False] * n_true
    coll = cal.collection
    assert coll.n_tokens == tokens.numel() - len(tokens)  # BOS never counted
    pieces = token_pieces(tok, tokens)
    for j, cls in enumerate(TOKEN_CLASSES):
        # every member fires, every token that fires is a member (BOS excluded)
        expected = {
            (s, p)
            for s, row in enumerate(pieces)
            for p in range(1, len(row))
            if cls.fires(row[p], row[p - 1], row[p + 1] if p + 1 < len(row) else "")
        }
        assert cal.members[j] == expected
        random_j = j + n_true
        assert coll.sample_counts[random_j] == coll.sample_counts[j] == len(expected)
        assert all((s, p) in expected for s, p, *_ in coll.samples[j])
        places = [(x.sequence, x.position) for x in coll.samples[j]]
        assert places == sorted(places) and len(places) == min(30, len(expected))
        assert all(tokens[s, p] != 0 for s, p in cal.members[random_j])
    for x in coll.samples[CLASS_NAMES.index("names")]:
        assert x.token.strip() in WORDS["names"] and f"<<{x.token}>>" in x.context


def test_calibration_set_bad_input(toy: tuple[Any, torch.Tensor, CalibrationSet]) -> None:
    tok, tokens, _ = toy
    with pytest.raises(ValueError, match="'colours'.*must be one of"):
        build_calibration_set(tok, tokens, classes=["digits", "colours"])
    with pytest.raises(ValueError, match="no class"):
        build_calibration_set(tok, tokens, classes=["digits"], min_members=10**6)
    few = build_calibration_set(tok, tokens, classes=["digits", "names"], n_random=5)
    assert few.labels == ["digits", "names", "random_digits", "random_names", "random_digits",
                          "random_names", "random_digits"]  # fmt: skip


# ---------------------------------------------------------------- stand-in judges
def _split(context: str) -> tuple[str, str, str]:
    """(text before, token, text after) of a context with one ``<<token>>``."""
    at = context.index("<<")
    end = context.index(">>", at + 2)
    return context[:at], context[at + 2 : end], context[end + 2 :]


# most specific first: a name is also capitalised, "He" also a pronoun
PREFERENCE = ["digits", "sentence_final", "names", "pronouns", "prepositions", "ly_words",
              "ing_words", "capitalised"]  # fmt: skip
BY_NAME = {c.name: c for c in TOKEN_CLASSES}
BY_DESCRIPTION = {c.description: c for c in TOKEN_CLASSES}


class OracleJudge:
    """Describes m samples by the most specific class they all belong to (or admits there is
    none), and answers a test by checking that class on the marked token."""

    def __init__(self) -> None:
        self.asked = 0

    def answer(self, prompt: str) -> str:
        if "What do the marked tokens have in common" in prompt:
            passages = re.findall(r"^\d+\. (.*)$", prompt, re.MULTILINE)
            for name in PREFERENCE:
                c = BY_NAME[name]
                if all(c.fires(tok, b, a) for b, tok, a in map(_split, passages)):
                    return f"Description: {c.description}"
            return "Description: they share no property I can name"
        context = re.search(r"^Passage: (.*)$", prompt, re.MULTILINE).group(1)  # type: ignore[union-attr]
        description = re.search(r"^Description of a feature: (.*)$", prompt, re.MULTILINE).group(1)  # type: ignore[union-attr]
        named = BY_DESCRIPTION.get(description)
        before, tok, after = _split(context)
        return "Yes" if named is not None and named.fires(tok, before, after) else "No"

    def ask(self, requests: list[Any], max_tokens: int, desc: str = "") -> list[Answer]:
        self.asked += len(requests)
        return [Answer(str(i), self.answer(m[-1]["content"])) for i, m in enumerate(requests)]


class AlwaysYesJudge(OracleJudge):
    def answer(self, prompt: str) -> str:
        if "What do the marked tokens have in common" in prompt:
            return "Description: a token in a passage of a novel"
        return "Yes"


def test_oracle_judge_is_usable(toy: tuple[Any, torch.Tensor, CalibrationSet]) -> None:
    _, _, cal = toy
    judge = OracleJudge()
    result = calibrate(cal, judge, SETTINGS, judge_model="oracle")
    assert judge.asked > 0
    assert result.n_true == result.n_random == len(CLASS_NAMES)
    assert result.auroc >= 0.95 and result.usable and result.verdict == "usable"
    assert result.groups["true"]["gap"] >= 0.8  # type: ignore[operator]
    assert abs(result.groups["random"]["gap"]) <= 0.1  # type: ignore[arg-type]
    # negatives never include a token the feature fires on: the oracle has no false positive
    assert all(x["false_positive_rate"] in (0.0, None) for x in result.features if x["true"])
    table = markdown(result)
    assert "**usable**" in table and "random_names" in table


def test_always_yes_judge_is_not_usable(toy: tuple[Any, torch.Tensor, CalibrationSet]) -> None:
    _, _, cal = toy
    result = calibrate(cal, AlwaysYesJudge(), SETTINGS, judge_model="yes-man")
    assert result.auroc == pytest.approx(0.5)
    assert not result.usable and result.verdict == "NOT usable"
    for group in ("true", "random"):
        assert result.groups[group]["score"] == 1.0
        assert result.groups[group]["false_positive_rate"] == 1.0
        assert result.groups[group]["gap"] == 0.0
    assert "**NOT usable**" in markdown(result)


def test_verdict_file_and_table(
    toy: tuple[Any, torch.Tensor, CalibrationSet], tmp_path: Path
) -> None:
    _, _, cal = toy
    path = tmp_path / "calibration" / "judges.json"
    assert "none recorded for oracle" in verdict_line("oracle", path)
    record_verdict(calibrate(cal, OracleJudge(), SETTINGS, judge_model="oracle"), path)
    record_verdict(calibrate(cal, AlwaysYesJudge(), SETTINGS, judge_model="yes-man"), path,
                   {"command": "test"})  # fmt: skip
    registry = load_registry(path)
    assert set(registry) == {"oracle", "yes-man"}
    assert registry["yes-man"]["usable"] is False and registry["yes-man"]["command"] == "test"
    assert registry["oracle"]["usable"] is True
    line = verdict_line("yes-man", path)
    assert "**NOT usable**" in line and "0.500" in line
    coll = _toy_collection()
    results = [FeatureResult(0, 12, 0.1, "d", "ok", score=1.0, false_positive_rate=0.0)]
    table = markdown_table({"toy": summarise(coll, results, SETTINGS)}, "yes-man at x", line)
    assert table.splitlines()[:2] == ["Judge: yes-man at x", line]
    assert "LLM-free detection" in table


# ---------------------------------------------------------------- the LLM-free score
def test_sample_features() -> None:
    x = Sample(0, 3, " Quickly", "and then<< Quickly>>, he ran")
    assert sample_features(x) == {"lower=quickly", "raw= Quickly", "suf2=ly", "suf3=kly",
                                  "shape=Xx", "space=1", "before=then", "after=,"}  # fmt: skip


def test_detection_score_hand_built() -> None:
    def s(tok: str, i: int) -> Sample:
        return Sample(i, 1, tok, f"w{i} w<<{tok}>> w{i}")

    ly = [s(" softly", i) for i in range(10)]
    other = [s(" house", i) for i in range(10)]
    assert detection_score(ly, other) == 1.0  # told apart on the token itself
    assert detection_score(ly, ly) == 0.5  # identical: chance
    assert detection_score(ly[:1], other) is None


def test_llm_free_score_ranks_true_features_first(
    toy: tuple[Any, torch.Tensor, CalibrationSet],
) -> None:
    _, _, cal = toy
    features = sorted(cal.collection.samples)
    scores = detection_scores(cal.collection, features, members=cal.members)
    true = [scores[j] for j in features if cal.is_true[j]]
    rand = [scores[j] for j in features if not cal.is_true[j]]
    assert None not in true and None not in rand
    assert auroc(true, rand) >= 0.9  # type: ignore[arg-type]
    assert sum(rand) / len(rand) < 0.7  # type: ignore[arg-type]
    result = calibrate(cal, AlwaysYesJudge(), SETTINGS)
    assert result.llm_free_auroc == pytest.approx(auroc(true, rand))  # type: ignore[arg-type]


# ---------------------------------------------------------------- bootstrap intervals
def test_bootstrap_intervals() -> None:
    assert bootstrap_interval([0.4, 0.4, 0.4], "mean") == [0.4, 0.4]
    assert bootstrap_interval([0.5], "mean") is None
    half = [0.0, 1.0] * 20
    low, high = bootstrap_interval(half, "mean")  # type: ignore[misc]
    assert 0.25 < low < 0.5 < high < 0.75  # +- about 2 standard errors (0.08) around 0.5
    low, high = bootstrap_interval(half, "count", threshold=0.75)  # type: ignore[misc]
    assert 10 <= low < 20 < high <= 30
    assert bootstrap_interval(half, "mean", seed=3) == bootstrap_interval(half, "mean", seed=3)
    with pytest.raises(ValueError, match="statistic='median'"):
        bootstrap_interval(half, "median")


def _toy_collection() -> Collection:
    def sample(j: int, i: int, tok: str) -> Sample:
        return Sample(j, i, tok, f"some text <<{tok}>> more text {j}-{i}")

    samples = {
        0: [sample(0, i, "a") for i in range(12)],
        1: [sample(1, i, "b") for i in range(12)],
        2: [sample(2, i, "c" if i % 2 else "d") for i in range(12)],
    }
    return Collection("toy", "burst", 10, 100, [0.1, 0.2, 0.3], [12, 12, 12], samples)


def test_summary_carries_intervals_and_llm_free_score() -> None:
    coll = _toy_collection()
    scores = [(1.0, 0.0), (0.5, 0.25), (0.875, 0.5)]
    results = [
        FeatureResult(j, 12, 0.1, "d", "ok", score=sc, false_positive_rate=fp)
        for j, (sc, fp) in enumerate(scores)
    ]
    row = summarise(coll, results, SETTINGS)
    lo, hi = row["mean_score_ci"]
    assert 0.5 <= lo <= row["mean_score"] <= hi <= 1.0
    lo, hi = row["mean_score_minus_fpr_ci"]
    assert 0.25 <= lo <= row["mean_score_minus_fpr"] <= hi <= 1.0
    assert 0 <= row["n_interpretable_ci"][0] <= row["n_interpretable"] == 2
    assert row["n_interpretable_ci"][1] <= 3
    assert row["llm_free_detection"] == pytest.approx(1.0)  # one token each: trivially apart
    table = markdown_table({"toy": row}, "fake")
    assert f"[{row['mean_score_ci'][0]:.3f}, {row['mean_score_ci'][1]:.3f}]" in table
    free = summarise_llm_free(coll, SETTINGS)
    assert free["n_judged"] == 0 and free["n_detected"] == 3
    assert free["llm_free_detection"] == pytest.approx(row["llm_free_detection"])
    assert free["llm_free_detection_ci"] == [1.0, 1.0] and free["n_llm_free_scored"] == 3
    assert "1.000 [1.000, 1.000]" in markdown_table({"toy": free}, "none")
    assert "| - |" in markdown_table({"toy": free}, "none")  # no judge columns


# ---------------------------------------------------------------- the command line
def test_cli_calibrate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from contextlib import ExitStack

    from bae_lens import cli
    from bae_lens.cli import comsem as comsem_cli
    from bae_lens.comsem.judge import JudgeConfig

    class Configured(AlwaysYesJudge):
        config = JudgeConfig(base_url="http://127.0.0.1:1/v1", model="yes-man")
        sent = answered = 1

    def open_judge(args: Any, out: Path, stack: ExitStack) -> tuple[Any, str]:
        return Configured(), "yes-man (stand-in)"

    monkeypatch.setattr(comsem_cli, "_calibration_tokens", lambda args: toy_corpus())
    monkeypatch.setattr(comsem_cli, "_open_judge", open_judge)
    monkeypatch.setattr("bae_lens.cli.preflight.check_judge", lambda url, model: None)
    registry = tmp_path / "judges.json"
    out = tmp_path / "out"
    code = cli.main(["comsem", "--calibrate", "--judge-base-url", "http://127.0.0.1:1/v1",
                     "--judge-model", "yes-man", "--calibration-file", str(registry),
                     "--calibration-classes", "digits,names,ly_words",
                     "--output", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "**NOT usable**" in printed and "yes-man" in printed
    payload = json.loads((out / "calibration.json").read_text())
    assert payload["calibration"]["n_true"] == 3 and payload["calibration"]["auroc"] == 0.5
    assert (out / "calibration.md").read_text().startswith("Judge calibration of yes-man")
    assert load_registry(registry)["yes-man"]["verdict"] == "NOT usable"
    # --calibrate takes no dictionaries; without it, one is needed
    assert cli.main(["comsem", "--calibrate", str(tmp_path), "--output", str(out)]) == 2
    assert "takes no dictionaries" in capsys.readouterr().err
    assert cli.main(["comsem", "--output", str(out)]) == 2
    assert "at least one saved dictionary" in capsys.readouterr().err


# ---------------------------------------------------------------- the embedded corpus
@pytest.fixture(scope="module")
def embedded() -> tuple[Any, torch.Tensor]:
    from bae_lens.corpus import load_data
    from bae_lens.evaluate import build_eval_tokens
    from bae_lens.model_cache import load_embedded_tokenizer

    try:
        tok = load_embedded_tokenizer()
        texts = load_data("embedded", "eval")["text"]
    except (FileNotFoundError, ModuleNotFoundError) as err:
        pytest.skip(f"embedded model or corpus missing: {err}")
    return tok, build_eval_tokens(tok, texts, 128, 10**6, tok.bos_token_id)


def test_calibration_on_the_embedded_corpus(embedded: tuple[Any, torch.Tensor]) -> None:
    tok, tokens = embedded
    cal = build_calibration_set(tok, tokens)
    assert cal.labels[: len(CLASS_NAMES)] == list(CLASS_NAMES)  # every class is there
    assert all(n >= 14 for n in cal.collection.sample_counts)
    pieces = token_pieces(tok, tokens)
    found = class_members(pieces)
    seen = {pieces[s][p].strip() for s, p in found["names"]}
    assert seen == set(CHARACTER_NAMES)  # every listed name occurs as a whole-word token
    result = calibrate(cal, OracleJudge(), SETTINGS, judge_model="oracle")
    assert result.auroc >= 0.9 and result.usable
    assert result.llm_free_auroc >= 0.9
    assert not calibrate(cal, AlwaysYesJudge(), SETTINGS).usable


def test_auroc_interval_brackets_the_point_value_and_narrows_with_more_features() -> None:
    from bae_lens.comsem.calibrate import auroc, auroc_interval

    pos, neg = [0.9, 0.1, 0.6, 0.4], [0.5, 0.2, 0.3, 0.7]
    low, high = auroc_interval(pos, neg)
    assert low < auroc(pos, neg) < high
    wide = high - low
    low, high = auroc_interval(pos * 8, neg * 8)
    assert low < auroc(pos, neg) < high and high - low < wide


def test_contexts_leave_out_special_tokens_but_show_a_marked_one() -> None:
    from bae_lens.comsem.collect import token_context

    class Tok:
        all_special_ids = [0]

        def decode(self, ids: list[int]) -> str:
            return "".join("<|im_start|>" if i == 0 else f" w{i}" for i in ids)

    assert token_context(Tok(), [0, 1, 2, 3], 2, 5, 5) == (" w2", " w1<< w2>> w3")
    assert token_context(Tok(), [0, 1, 2], 0, 5, 5) == ("<|im_start|>", "<<<|im_start|>>> w1 w2")


def test_a_calibration_made_with_another_prompt_version_is_called_out(tmp_path: Path) -> None:
    import json

    from bae_lens.comsem.calibrate import verdict_line
    from bae_lens.comsem.score import PROMPT_VERSION

    entry = {"verdict": "usable", "auroc": 0.9, "bar": 0.8, "n_true": 8, "n_random": 8}
    registry = tmp_path / "judges.json"
    registry.write_text(
        json.dumps({"old": entry, "new": entry | {"prompt_version": PROMPT_VERSION}})
    )
    assert "re-calibrate" in verdict_line("old", registry)
    assert "re-calibrate" not in verdict_line("new", registry)
