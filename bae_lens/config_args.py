"""Command-line options from a config dataclass's fields and the docstrings under them.

A field ``entropy_coefficient: float = 0.0`` with a docstring below it becomes the option
``--entropy-coefficient`` (type float, that default, that docstring as help). Every
subcommand that exposes config fields goes through :func:`add_config_options` and
:func:`config_values`, so the options, their types and their help cannot drift apart
between subcommands. Docstrings are read with simple_parsing (which SAELens itself uses).

    >>> import argparse
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Demo:
    ...     rate: float = 0.5
    ...     '''How often it fires.'''
    >>> parser = argparse.ArgumentParser()
    >>> add_config_options(parser, Demo, ["rate"])
    >>> config_values(parser.parse_args(["--rate", "0.25"]), ["rate"])
    {'rate': 0.25}
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from simple_parsing.docstring import get_attribute_docstring


def field_help(config_cls: type, name: str) -> str:
    """The docstring under field ``name`` (or the comment beside it), on one line."""
    doc = get_attribute_docstring(config_cls, name)
    text = doc.docstring_below or doc.comment_inline or doc.comment_above or ""
    return " ".join(text.split()).replace("%", "%%")  # argparse formats help with %


def add_config_options(
    parser: argparse.ArgumentParser,
    config_cls: type,
    names: Sequence[str],
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Add ``--<name>`` for each field ``name`` of ``config_cls``; ``defaults`` overrides
    the dataclass's defaults (a job's own choices). Unknown names raise ValueError."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise ValueError(f"{unknown} are not fields of {config_cls.__name__}")
    overrides = dict(defaults or {})
    for name in names:
        default = overrides.get(name, fields[name].default)
        if default is dataclasses.MISSING:
            raise ValueError(f"field {name!r} of {config_cls.__name__} has no default")
        kind = type(default) if default is not None else float
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=default,
            help=f"{field_help(config_cls, name)} (default: %(default)s)",
        )


def config_values(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The parsed values of the options :func:`add_config_options` added, by field name."""
    return {name: getattr(args, name) for name in names}
