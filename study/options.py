"""Configuration fields that know their command-line flag and environment variable.

A frozen configuration dataclass declares each setting once, with `option(...)`; the
parser (study/parser.py) adds its flags from there, `resolve` builds the dataclass with
the one precedence used everywhere (flag > environment variable > default), and the
command reference (docs/cli.md) is generated from the same declarations. Imports nothing
heavy: building a parser takes milliseconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from study.errors import SetupError

_KEY = "facehpo"


@dataclass(frozen=True)
class Option:
    name: str                  # the dataclass field (and argparse dest)
    default: object
    flag: str | None           # --storage
    aliases: tuple[str, ...]   # older spellings, still accepted
    env: str | None            # FACEHPO_STORAGE
    help: str
    kind: str                  # int | positive | float | str | path | bool
    choices: tuple | None
    metavar: str | None        # SECONDS, URL, FILE ...


def option(default, *, flag: str | None = None, aliases: tuple[str, ...] = (), env: str | None = None,
           help: str = "", kind: str | None = None, choices: tuple | None = None,
           metavar: str | None = None):
    """A dataclass field with its flag / environment variable (either may be None)."""
    if kind is None:
        kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(type(default), "str")
        kind = "path" if isinstance(default, Path) else kind
    return dataclasses.field(default=default, metadata={_KEY: dict(
        flag=flag, aliases=tuple(aliases), env=env, help=help, kind=kind,
        choices=tuple(choices) if choices else None, metavar=metavar)})


def options(cls) -> list[Option]:
    return [Option(f.name, f.default, **f.metadata[_KEY]) for f in dataclasses.fields(cls)
            if _KEY in f.metadata]


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


_PARSE = {"int": _integer, "positive": positive, "float": _number, "str": str, "path": Path,
          "bool": lambda t: t.strip().lower() in ("1", "true", "yes", "on")}


def add_flags(parser: argparse.ArgumentParser, cls, defaults: dict | None = None,
              required: tuple[str, ...] = (), skip: tuple[str, ...] = (),
              only: tuple[str, ...] | None = None) -> None:
    """One argument per field of `cls` that has a flag. The argparse default stays None,
    so `resolve` can tell a flag given from one left out; `defaults` overrides a field's
    default for this command (shown in --help)."""
    defaults = defaults or {}
    for o in options(cls):
        if not o.flag or o.name in skip or (only is not None and o.name not in only):
            continue
        default = defaults.get(o.name, o.default)
        shown = [f"env {o.env}"] if o.env else []
        if o.kind != "bool" and default is not None and o.name not in required:
            shown.append(f"default {default}")
        text = o.help + (f" ({'; '.join(shown)})" if shown else "")
        names = (o.flag, *o.aliases)
        if o.kind == "bool":
            parser.add_argument(*names, dest=o.name, action="store_true", default=None, help=text)
            continue
        parser.add_argument(*names, dest=o.name, type=_PARSE[o.kind], choices=o.choices,
                            required=o.name in required, default=None, help=text,
                            metavar=None if o.choices else (o.metavar or o.flag.lstrip("-").upper().replace("-", "_")))


def value(o: Option, args: argparse.Namespace | None, defaults: dict | None = None):
    """One option's value: the flag in `args` > its environment variable > `defaults`
    (the command's) > the field's default."""
    flag = getattr(args, o.name, None) if args is not None else None
    if flag is not None:
        return flag
    if o.env and os.environ.get(o.env) not in (None, ""):
        return _from_env(o)
    return (defaults or {}).get(o.name, o.default)


def resolve(cls, args: argparse.Namespace | None = None, defaults: dict | None = None, **given):
    """`cls(...)` from, per field: `given` > `value(...)` of its option."""
    values = {o.name: value(o, args, defaults) for o in options(cls) if o.name not in given}
    return cls(**values, **given)


def _from_env(o: Option):
    raw = os.environ[o.env]
    kind = "int" if o.kind == "positive" else o.kind  # the range is the dataclass's to check
    try:
        value = _PARSE[kind](raw)
    except argparse.ArgumentTypeError:
        word = {"int": "an integer", "float": "a number"}[kind]
        raise SetupError(f"{o.env}={raw!r} is not {word}") from None
    if o.choices and value not in o.choices:
        raise SetupError(f"{o.env}={raw!r}: choose {', '.join(map(str, o.choices))}")
    return value


def run_name():
    return option("facehpo", flag="--name", env="FACEHPO_NAME", metavar="NAME",
                  help="run name: studies NAME-coarse, NAME-fine, NAME-final")


def model_variant():
    return option(1, flag="--model", kind="int", choices=(1, 2), help="the report's Model 1 or 2")


def seed():
    return option(0, flag="--seed", metavar="S", help="seed of the configurations drawn and the weights")


def out_dir():
    return option(Path("runs"), flag="--out", env="FACEHPO_OUT", metavar="DIR", help="output folder")


def pack():
    return option("auto", flag="--pack", env="FACEHPO_PACK", kind="str", metavar="K",
                  help="trials trained together as one model: a number, or auto (1 on a CPU, "
                       "16 on a GPU); the final stage always runs alone")


def epoch_progress():
    return option(False, flag="--epoch-progress", help="a line per epoch")
