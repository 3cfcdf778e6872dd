"""``bae-lens frontier``: every architecture at several sparsities on one activation cache,
compared at matched L0 (:func:`bae_lens.frontier.frontier_job`)."""

from __future__ import annotations

import argparse
from typing import Any

from bae_lens.cli.preflight import add_runtime_arguments, check_frontier
from bae_lens.cli.train import EVAL_SPLIT_HELP, check_run_arguments
from bae_lens.frontier import (
    ARCHITECTURES,
    DEFAULT_GRID,
    FrontierSettings,
    default_points,
    frontier_job,
)
from bae_lens.frontier_report import ABLATIONS, markdown_tables
from bae_lens.main_job import DEFAULT_HOOK
from bae_lens.runtime import set_threads


def _grid(text: str | None) -> dict[str, tuple[float, ...]] | None:
    """``bae=0.05,0.1;topk=32,64`` -> {"bae": (0.05, 0.1), "topk": (32.0, 64.0)}."""
    if not text:
        return None
    grid = dict(DEFAULT_GRID)
    for part in text.split(";"):
        arch, _, values = part.partition("=")
        if arch.strip() not in DEFAULT_GRID or not values:
            raise ValueError(
                f"--grid part {part!r}: expected ARCH=V1,V2 with ARCH in {list(DEFAULT_GRID)}"
            )
        grid[arch.strip()] = tuple(float(v) for v in values.split(","))
    return grid


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model name (default: the embedded SmolLM2)")
    p.add_argument("--hook", default=DEFAULT_HOOK)
    p.add_argument("--dataset", default="embedded")
    p.add_argument("--eval-split", default="auto", help=EVAL_SPLIT_HELP)
    p.add_argument("--architectures", default=",".join(a for a in ARCHITECTURES if a not in ABLATIONS),
                   help=f"comma-separated subset of {','.join(ARCHITECTURES)} (default: all but "
                        f"the ablation{'s' if len(ABLATIONS) > 1 else ''} {','.join(ABLATIONS)})")  # fmt: skip
    p.add_argument("--grid", default=None, help="override settings, e.g. 'bae=0.05,0.1;topk=32,64'")
    p.add_argument("--expansion", type=int, default=4)
    p.add_argument(
        "--training-tokens", type=int, default=2_000_000, help="cache rows = tokens per point"
    )
    p.add_argument("--batch-tokens", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--context-size", type=int, default=128)
    p.add_argument("--eval-tokens", type=int, default=65_536, help="held-out tokens spliced in")
    p.add_argument("--eval-every", type=int, default=4, help="evaluate after this many new points")
    p.add_argument(
        "--cache-dir",
        default=None,
        help="activation cache folder (default under ~/.cache/bae_lens)",
    )
    p.add_argument("--work-dir", default="runs/frontier", help="trained points (resumable)")
    p.add_argument("--output", default="benchmarks/results/frontier", help="table, JSON, plot")
    add_runtime_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="document shuffle of the cache")


def evaluated_line(results: dict[str, Any], planned: list[str], output: str) -> str:
    """The closing line: this run's points evaluated, and the report's total (which also
    holds points other sweeps evaluated into the same work folder)."""
    done = sum(name in results for name in planned)
    return (
        f"{done} of this run's {len(planned)} points evaluated; the report in {output}/ "
        f"holds {len(results)} evaluated points"
    )


def run(args: argparse.Namespace) -> int:
    check_run_arguments(args)
    check_frontier(args)
    set_threads(args.threads)
    archs = [a.strip() for a in args.architectures.split(",") if a.strip()]
    points = default_points(_grid(args.grid), archs)
    settings = FrontierSettings(
        hook=args.hook, model_name=args.model or "smollm2-135m-instruct",
        expansion=args.expansion, training_tokens=args.training_tokens,
        batch_tokens=args.batch_tokens, lr=args.lr, context_size=args.context_size,
        device=args.device, dtype=args.dtype,
    )  # fmt: skip
    payload = frontier_job(
        model_name=args.model, hook=args.hook, dataset=args.dataset, points=points,
        settings=settings, eval_tokens=args.eval_tokens, work_dir=args.work_dir,
        output=args.output, cache_dir=args.cache_dir, seed=args.seed, eval_every=args.eval_every,
        eval_split=args.eval_split,
    )  # fmt: skip
    print(markdown_tables(payload["results"]))
    print(evaluated_line(payload["results"], [p.name for p in points], args.output))
    return 0
