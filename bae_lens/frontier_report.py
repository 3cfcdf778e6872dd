"""Tables, matched-L0 interpolation and plots of a frontier sweep (:mod:`bae_lens.frontier`).

:func:`matched_l0_table` interpolates each architecture's metrics linearly in log L0 at
the L0 values asked for (no extrapolation: a value outside an architecture's L0 range is
left empty), and :func:`plot_frontier` draws L0 against KL, explained variance and the
count of features firing on more than 10% of tokens, one line per architecture.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ARCHITECTURES = (
    "bae", "random_bae", "bae_temp1", "bae_entropy", "topk", "batchtopk", "jumprelu",
    "standard",
)  # fmt: skip
"""Every architecture a sweep knows, in table and plot order: ``bae`` is the shipped BAE
recipe (priced per firing), ``random_bae`` the random-code control of
:mod:`bae_lens.baselines` at each ``bae`` point's firing rate, ``bae_temp1`` the shipped
recipe with the sigmoid estimator at temperature 1 (an ablation: the recipe before the
temperature was lowered to 0.3),
``bae_entropy`` the paper's objective (priced per bit of entropy, no price per firing)."""


ABLATIONS = ("bae_temp1",)
"""Architectures a sweep trains only when named in ``--architectures``."""


def _dense10(m: Mapping[str, Any]) -> float:
    return float(m["n_dense"]["0.1"])


def _curve(
    results: Mapping[str, Mapping[str, Any]], arch: str, seed: int
) -> list[Mapping[str, Any]]:
    rows = [m for m in results.values()
            if m["point"]["architecture"] == arch and m["point"]["seed"] == seed and m["l0"] > 0]  # fmt: skip
    return sorted(rows, key=lambda m: m["l0"])


def interpolate_at(curve: Sequence[Mapping[str, Any]], l0: float, key: str) -> float | None:
    """``key`` at ``l0``, linear in log L0 between the two points around it; None outside."""
    values = [
        (math.log(m["l0"]), _dense10(m) if key == "n_dense_0.1" else float(m[key])) for m in curve
    ]
    target = math.log(l0)
    for (x0, y0), (x1, y1) in zip(values, values[1:], strict=False):
        if x0 <= target <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (target - x0) / (x1 - x0)
    return None


def matched_l0_table(
    results: Mapping[str, Mapping[str, Any]],
    l0s: Sequence[float] = (32, 64, 128),
    keys: Sequence[str] = ("kl_spliced", "explained_variance", "n_dense_0.1"),
    seed: int = 42,
) -> dict[str, dict[str, dict[str, float | None]]]:
    """{architecture: {"L0=32": {key: value}}} interpolated on log L0."""
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for arch in ARCHITECTURES:
        curve = _curve(results, arch, seed)
        if len(curve) < 2:
            continue
        table[arch] = {f"L0={l0:g}": {k: interpolate_at(curve, l0, k) for k in keys} for l0 in l0s}
    return table


def markdown_tables(
    results: Mapping[str, Mapping[str, Any]], l0s: Sequence[float] = (32, 64, 128)
) -> str:
    """Every point's metrics, then the matched-L0 table."""
    lines = ["| point | L0 | burst L0 | KL | CE rec. | EV | MSE | entropy | dead | >1% | >10% | >50% | note |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for name, m in sorted(
        results.items(), key=lambda kv: (kv[1]["point"]["architecture"], kv[1]["l0"])
    ):
        d = m["n_dense"]
        lines.append(
            f"| {name} | {m['l0']:.1f} | {m['burst_l0']:.1f} | {m['kl_spliced']:.4f} | "
            f"{m['ce_loss_recovered']:.3f} | {m['explained_variance']:.3f} | {m['mse']:.4g} | "
            f"{m['entropy_bits']:.0f} | {m['n_dead']} | {d['0.01']} | {d['0.1']} | {d['0.5']} | "
            f"{_note(m)} |"
        )
    table = matched_l0_table(results, l0s)
    header = "| architecture | " + " | ".join(f"KL / EV / >10% at L0={v:g}" for v in l0s) + " |"
    lines += ["", header, "| --- |" + " --- |" * len(l0s)]
    for arch, row in table.items():
        cells = []
        for v in l0s:
            c = row[f"L0={v:g}"]
            cells.append("n/a" if c["kl_spliced"] is None else
                         f"{c['kl_spliced']:.4f} / {c['explained_variance']:.3f} / {c['n_dense_0.1']:.0f}")  # fmt: skip
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    verdicts = target_lines(table, l0s)
    if verdicts:
        lines += [
            "",
            "Against the recipe's targets (issue 12), where both curves reach the L0:",
            "",
        ]
        lines += [f"- {v}" for v in verdicts]
    return "\n".join(lines)


def target_lines(
    table: Mapping[str, Mapping[str, Mapping[str, float | None]]], l0s: Sequence[float]
) -> list[str]:
    """At each matched L0: the BAE's KL against TopK's (ratio) and the random control's
    (reduction; target >= 25%), and its features over 10% against TopK's."""
    out = []
    for v in l0s:
        key = f"L0={v:g}"

        def at(arch: str, metric: str, key: str = key) -> float | None:
            return table.get(arch, {}).get(key, {}).get(metric)

        bae_kl, bae_dense = at("bae", "kl_spliced"), at("bae", "n_dense_0.1")
        if bae_kl is None or bae_dense is None:
            continue
        parts = []
        topk_kl, topk_dense = at("topk", "kl_spliced"), at("topk", "n_dense_0.1")
        if topk_kl is not None and topk_dense is not None:
            parts.append(f"KL {bae_kl / topk_kl:.2f}x TopK's; features over 10%: "
                         f"{bae_dense:.0f} vs TopK's {topk_dense:.0f}")  # fmt: skip
        random_kl = at("random_bae", "kl_spliced")
        if random_kl is not None:
            cut = 1 - bae_kl / random_kl
            parts.append(f"KL {cut:.0%} below the random control's "
                         f"({'meets' if cut >= 0.25 else 'misses'} the 25% target)")  # fmt: skip
        if parts:
            out.append(f"L0 {v:g}: BAE " + "; ".join(parts))
    return out


def _note(m: Mapping[str, Any]) -> str:
    """JumpReLU: whether it reached its L0 target (within 25%); any note the point carries."""
    point = m["point"]
    if point["architecture"] != "jumprelu":
        return str(m.get("note", ""))
    target = float(point["setting"])
    reached = abs(m["l0"] - target) <= 0.25 * target
    return f"target L0 {target:g}: " + ("reached" if reached else "NOT reached")


def plot_frontier(results: Mapping[str, Mapping[str, Any]], path: str, title: str = "") -> None:
    """L0 against KL, explained variance and features over 10%, one line per architecture
    (seed 42; other seeds as hollow markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the dense count spans 0 to thousands: symmetric log keeps 0 and tells 8 from 95
    panels = (("kl_spliced", "KL spliced (nats)", "log"), ("explained_variance", "explained variance", "linear"),
              ("n_dense_0.1", "features firing on > 10% of tokens", "symlog"))  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for i, arch in enumerate(ARCHITECTURES):
        for seed_index, seed in enumerate(sorted({m["point"]["seed"] for m in results.values()})):
            curve = _curve(results, arch, seed)
            if not curve:
                continue
            l0 = [m["l0"] for m in curve]
            for ax, (key, _, _) in zip(axes, panels, strict=True):
                y = [_dense10(m) if key == "n_dense_0.1" else m[key] for m in curve]
                if seed_index == 0:
                    ax.plot(l0, y, marker="o", color=f"C{i}", label=arch)
                else:
                    ax.scatter(l0, y, facecolors="none", edgecolors=f"C{i}", zorder=3)
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    for ax, (_, label, y_scale) in zip(axes, panels, strict=True):  # once per panel
        ax.set_xscale("log")
        if y_scale == "symlog":
            ax.set_yscale("symlog", linthresh=10)
            ax.set_ylim(bottom=0)
        else:
            ax.set_yscale(y_scale)
        ax.set_xlabel("L0 (active features or ones per token)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        # L0 ticks as plain numbers at powers of 2; no crowded minor labels
        ax.xaxis.set_major_locator(FixedLocator([8, 16, 32, 64, 128, 256, 512, 1024]))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0].legend(fontsize=8)
    fig.suptitle(title + "  (hollow: another seed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    results: Mapping[str, Mapping[str, Any]], out: Path, extra: Mapping[str, Any], title: str
) -> None:
    """frontier.json, frontier.md and frontier.png under ``out`` (each written whole, then
    renamed into place: sweeps running in parallel never leave a torn file)."""
    out.mkdir(parents=True, exist_ok=True)
    payload = dict(extra) | {"results": dict(results), "matched_l0": matched_l0_table(results)}
    for name, text in (("frontier.json", json.dumps(payload, indent=1)),
                       ("frontier.md", markdown_tables(results) + "\n")):  # fmt: skip
        tmp = out / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
    if results:
        tmp_png = out / f".frontier.{os.getpid()}.png"
        plot_frontier(results, str(tmp_png), title)
        os.replace(tmp_png, out / "frontier.png")


def place_against_frontier(
    frontier: Mapping[str, Any], model: str, hook: str, l0: float, kl: float, arch: str = "topk"
) -> dict[str, Any]:
    """Where a dictionary with this ``l0`` and ``kl`` lands against ``arch``'s curve of a
    frontier report (``frontier.json``'s payload): the curve's KL interpolated at ``l0`` on
    log L0 and the ratio, or the reason there is none (other model or hook, ``l0``
    outside the curve's range)."""
    cache_key = frontier.get("cache", {}).get("key", {})
    out: dict[str, Any] = {"architecture": arch, "l0": l0, "kl": kl}
    if cache_key.get("model") != model or cache_key.get("hook") != hook:
        return out | {"reason": f"the frontier is of {cache_key.get('model')} "
                                f"{cache_key.get('hook')}, not {model} {hook}"}  # fmt: skip
    curve = _curve(frontier.get("results", {}), arch, 42)
    if len(curve) < 2:
        return out | {"reason": f"the frontier has {len(curve)} {arch} point(s), 2 needed"}
    reference = interpolate_at(curve, l0, "kl_spliced")
    if reference is None:
        low, high = curve[0]["l0"], curve[-1]["l0"]
        return out | {"reason": f"L0 {l0:.1f} is outside the frontier's {arch} range "
                                f"({low:.0f} to {high:.0f})"}  # fmt: skip
    return out | {"frontier_kl": reference, "kl_ratio": kl / reference}


def placement_line(placement: Mapping[str, Any]) -> str:
    """One printable sentence of :func:`place_against_frontier`'s result."""
    arch = placement["architecture"]
    if "frontier_kl" not in placement:
        return f"against the frontier's {arch}: no comparison ({placement['reason']})"
    return (
        f"against the frontier's {arch} at the same L0 ({placement['l0']:.1f}): KL "
        f"{placement['kl']:.4f} vs {placement['frontier_kl']:.4f} interpolated on log L0 "
        f"({placement['kl_ratio']:.2f}x; the frontier's dictionaries trained on more tokens "
        "and were scored on its own held-out set)"
    )
