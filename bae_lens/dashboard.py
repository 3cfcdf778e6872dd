"""A static HTML feature dashboard: one self-contained page per feature plus an index.

What SAE-Dashboard (the Neuronpedia exporter) shows, for dictionaries it cannot read or
in an environment where it cannot be installed (it pins transformer-lens < 3 and
transformers 4, see the README): per feature its firing rate, the rate of its graded
view, a histogram of the graded values, the ComSem description when one is given, and its
top examples by graded value (:mod:`bae_lens.feature_examples`), each a window of tokens
shaded by the feature's value at every token, the example token outlined. No script, no
network asset: the pages open from disk in any browser.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from bae_lens.feature_examples import FeatureExamples

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:70em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.4em}
table{border-collapse:collapse}td,th{padding:.25em .6em;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}th{background:#f4f4f4}
.ctx{font-family:ui-monospace,monospace;font-size:.92em;white-space:pre-wrap;line-height:1.7}
.tok{border-radius:2px}.hit{outline:2px solid #c0392b;font-weight:bold}
.val{color:#666;font-family:ui-monospace,monospace;padding-right:1em}
.meta{color:#555}.warn{background:#fdecea;padding:.4em .8em;border-left:3px solid #c0392b}
.desc{background:#f7f3e8;padding:.5em .8em;border-left:3px solid #d4a017}
"""


class Description(NamedTuple):
    """A ComSem description of one feature and the firing rate ComSem measured for it."""

    text: str
    firing_rate: float | None


def load_comsem_descriptions(path: str | Path, name: str | None = None) -> dict[int, Description]:
    """Feature -> description from a ``bae-lens comsem`` result JSON (``comsem.json``).

    ``name``: which dictionary of the file (needed when it holds several)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r}: not a readable JSON file ({err})") from None
    features = data.get("features") if isinstance(data, dict) else None
    if not isinstance(features, dict) or not features:
        raise ValueError(f"{str(path)!r}: no 'features' of a ComSem result (bae-lens comsem)")
    if name is None:
        if len(features) > 1:
            raise ValueError(
                f"{str(path)!r} holds dictionaries {sorted(features)}; name one (--comsem-name)"
            )
        name = next(iter(features))
    if name not in features:
        raise ValueError(f"{str(path)!r}: no dictionary {name!r}; it holds {sorted(features)}")
    return {
        int(f["feature"]): Description(str(f["description"]), f.get("firing_rate"))
        for f in features[name]
        if f.get("description") and f.get("status", "ok") == "ok"
    }


def rates_disagree(theirs: float | None, ours: float) -> bool:
    """ComSem's firing rate and ours differ by more than counting noise would explain
    (a quarter of the larger, and at least 0.005): a description of another dictionary (a
    retrained one in the same folder) or of another corpus."""
    if theirs is None:
        return False
    return abs(theirs - ours) > max(0.005, 0.25 * max(theirs, ours))


def pick_features(examples: FeatureExamples, n: int, first: list[int] | None = None) -> list[int]:
    """``first`` (e.g. the features ComSem described), then live features spread evenly
    over the range of firing rates (rare to common) until there are ``n``."""
    chosen = list(dict.fromkeys(first or []))
    live = sorted((r, j) for j, r in enumerate(examples.active_rates) if r > 0)
    rest = [j for _, j in live if j not in chosen]
    want = max(0, n - len(chosen))
    if want and rest:
        step = len(rest) / want
        spread = [rest[int(i * step)] for i in range(min(want, len(rest)))]
        chosen += list(dict.fromkeys(spread))  # rarest first
    return chosen


def _token_strings(tokenizer: Any, ids: list[int]) -> list[str]:
    if tokenizer is None:
        return [f"[{i}]" for i in ids]
    return [tokenizer.decode([i]) for i in ids]


def _shade(value: float, top: float) -> str:
    alpha = 0.0 if top <= 0 or value <= 0 else min(1.0, value / top)
    return f"background:rgba(46,134,222,{0.85 * alpha:.2f})"


def _context_html(
    strings: list[str], values: list[float], position: int, top: float, left: int, right: int
) -> str:
    spans = []
    for p in range(max(0, position - left), min(len(strings), position + right + 1)):
        text = html.escape(strings[p].replace("\n", "\u21b5"))
        cls = "tok hit" if p == position else "tok"
        spans.append(
            f'<span class="{cls}" style="{_shade(values[p], top)}" '
            f'title="{values[p]:.3f}">{text}</span>'
        )
    return "".join(spans)


def _histogram_svg(values: Tensor, bins: int = 30) -> str:
    """Inline SVG histogram of the positive values (the graded view's distribution)."""
    pos = values[values > 0].float()
    if len(pos) == 0:
        return "<p class=meta>no active token</p>"
    counts = torch.histc(pos, bins=bins, min=0.0, max=float(pos.max()))
    w, h, bw = 420, 90, 420 / bins
    peak = float(counts.max())
    bars = "".join(
        f'<rect x="{i * bw:.1f}" y="{h - h * c / peak:.1f}" width="{bw - 1:.1f}" '
        f'height="{h * c / peak:.1f}" fill="#2e86de"/>'
        for i, c in enumerate(counts.tolist())
    )
    return (
        f'<svg width="{w}" height="{h + 16}" role="img" aria-label="histogram">{bars}'
        f'<text x="0" y="{h + 13}" font-size="11">0</text>'
        f'<text x="{w}" y="{h + 13}" font-size="11" text-anchor="end">'
        f"{float(pos.max()):.3g}</text></svg>"
    )


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )


def write_dashboard(
    output: str | Path,
    examples: FeatureExamples,
    tokens: Tensor,
    tokenizer: Any,
    *,
    title: str,
    features: list[int] | None = None,
    descriptions: dict[int, Description] | None = None,
    context_left: int = 16,
    context_right: int = 6,
) -> Path:
    """Write ``index.html`` and ``feature_<j>.html`` for each of ``features`` (default:
    every tracked feature of ``examples``, which must be mined with them in ``track=``) to
    ``output``; returns the index path."""
    if examples.tracked_values is None:
        raise ValueError("examples track no feature: mine them with track=[features]")
    features = examples.tracked if features is None else features
    untracked = sorted(set(features) - set(examples.tracked))
    if untracked:
        raise ValueError(f"features {untracked[:10]} are not tracked by the examples")
    slot = {j: i for i, j in enumerate(examples.tracked)}
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    descriptions = descriptions or {}
    row_strings: dict[int, list[str]] = {}
    mismatched: list[int] = []
    index_rows = []
    for j in features:
        values = examples.tracked_values[slot[j]]  # [n_seq, T]
        top = examples.top.get(j, [])
        peak = top[0].value if top else 0.0
        rows = []
        for rank, e in enumerate(top, 1):
            if e.sequence not in row_strings:
                row_strings[e.sequence] = _token_strings(tokenizer, tokens[e.sequence].tolist())
            ctx = _context_html(row_strings[e.sequence], values[e.sequence].tolist(),
                                e.position, peak, context_left, context_right)  # fmt: skip
            rows.append(f'<tr><td class=val>{rank}</td><td class=val>{e.value:.3f}</td>'
                        f'<td class=ctx>{ctx}</td></tr>')  # fmt: skip
        common = Counter(row_strings[e.sequence][e.position] for e in top).most_common(3)
        common_text = ", ".join(f"{t.strip() or repr(t)} ({n})" for t, n in common)
        note = descriptions.get(j)
        desc = note.text if note else None
        desc_html = f"<p class=desc>ComSem: {html.escape(desc)}</p>" if desc else ""
        if note and rates_disagree(note.firing_rate, examples.firing_rates[j]):
            mismatched.append(j)
            desc_html += (
                f"<p class=warn>This description was written for a feature firing on "
                f"{note.firing_rate:.4f} of ComSem's tokens; here it fires on "
                f"{examples.firing_rates[j]:.4f}: another dictionary (retrained?) or "
                "another corpus.</p>"
            )
        body = (
            f'<p><a href="index.html">&larr; all features</a></p>'
            f"<h1>{html.escape(title)}: feature {j}</h1>{desc_html}"
            f"<p class=meta>firing rate {examples.firing_rates[j]:.4f} &middot; "
            f"{examples.view} view &gt; 0 on {examples.active_rates[j]:.4f} of "
            f"{examples.n_tokens} tokens &middot; top value {peak:.3f}</p>"
            f"<h2>Distribution of the {examples.view} value where it is &gt; 0</h2>"
            f"{_histogram_svg(values)}"
            f"<h2>Top {len(top)} examples by {examples.view} value</h2>"
            + (f"<table>{''.join(rows)}</table>" if rows else "<p>no active token</p>")
        )
        (out / f"feature_{j}.html").write_text(_page(f"feature {j}", body), encoding="utf-8")
        index_rows.append(
            f'<tr><td><a href="feature_{j}.html">{j}</a></td>'
            f"<td>{examples.firing_rates[j]:.4f}</td><td>{examples.active_rates[j]:.4f}</td>"
            f"<td>{peak:.3f}</td><td>{html.escape(common_text)}</td>"
            f"<td>{html.escape(desc or '')}</td></tr>"
        )
    warn = ""
    if mismatched:
        warn = (
            f"<p class=warn>{len(mismatched)} of {len(descriptions)} ComSem descriptions were "
            "written for features whose firing rate differs from the one measured here "
            "(another dictionary, retrained in the same folder, or another corpus); each "
            "page says so.</p>"
        )
    body = (
        f"<h1>{html.escape(title)}</h1>{warn}<p class=meta>{len(features)} features, "
        f"{examples.n_tokens} tokens, ranked by the {examples.view} view</p>"
        "<table><tr><th>feature</th><th>firing rate</th><th>view &gt; 0</th><th>top value</th>"
        f"<th>commonest top tokens</th><th>ComSem description</th></tr>{''.join(index_rows)}"
        "</table>"
    )
    index = out / "index.html"
    index.write_text(_page(title, body), encoding="utf-8")
    return index
