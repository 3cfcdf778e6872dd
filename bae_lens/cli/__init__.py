"""``bae-lens``: the command line, the top floor of the package.

Each subcommand lives in a module of this package that adds its arguments and calls the
library; nothing below this package imports it. ``bae-lens train`` is the main job: train
a BAE on a middle residual-stream layer of the embedded model (SmolLM2-135M-Instruct) on
the embedded corpus, save it in SAELens's format, evaluate it spliced into the model on
held-out text and plot its firing rates.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Each subcommand: (name, help, module). The module defines ``add_arguments(parser)`` and
# ``run(args) -> exit code``, and is imported when the parser is built.
SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("train", "train + save + evaluate a BAE (the main job)", "bae_lens.cli.train"),
    ("eval", "evaluate saved SAELens dictionaries spliced into the model, side by side",
     "bae_lens.cli.evaluate"),
    ("compare", "train the BAE and the baseline zoo on one activation cache; table + L0/CE plot",
     "bae_lens.cli.compare"),
    ("frontier", "every architecture at several sparsities on one activation cache, at matched L0",
     "bae_lens.cli.frontier"),
    ("comsem", "interpret and score features with any OpenAI-compatible judge (ComSem)",
     "bae_lens.cli.comsem"),
    ("import-legacy", "convert a model (and hidden states) written by the paper's released code",
     "bae_lens.cli.legacy"),
    ("entropy", "entropy (bits) of the model's hidden states per layer/position, estimated with BAEs",
     "bae_lens.cli.entropy"),
    ("dashboard", "static HTML pages of features: top examples by graded value, ComSem descriptions",
     "bae_lens.cli.dashboard"),
    ("upload", "push a saved SAE folder to the Hugging Face hub (token from $HF_TOKEN)",
     "bae_lens.cli.upload"),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bae-lens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {}
    for name, help_text, module_name in SUBCOMMANDS:
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_text))
        commands[name] = module.run
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command != "upload" and getattr(args, "dataset", "embedded") == "embedded":
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            os.environ.setdefault(name, "1")
    try:
        return int(commands[args.command](args))
    except (ValueError, FileNotFoundError) as err:
        print(f"bae-lens: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
