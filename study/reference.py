"""docs/cli.md, generated from the parser and the configuration dataclasses, so the
reference cannot drift from the code (tests/study/test_reference.py compares them).

    python -m study.reference > docs/cli.md
"""
from __future__ import annotations

import argparse
import os

from study.options import options
from study.parser import CONFIGS, build_parser

# Read by facehpo outside the configuration dataclasses (secrets, device, cache).
OTHER_ENV = [
    ("FACEHPO_STORAGE_PASSWORD_FILE", "every database command", "a file holding the database "
     "password (a Docker secret), inserted into a URL that has none; keep passwords out of URLs"),
    ("FACEHPO_READER_PASSWORD", "`db reader-role`", "the read-only role's password (none: no login)"),
    ("FACEHPO_MIXED_PRECISION", "`train`, `worker`, `final`, `pipeline`", "`1`: mixed_float16 on a "
     "GPU (mixed_bfloat16 on CPU); off by default, its accuracy effect is not measured"),
    ("FACEHPO_HOME", "commands without `--data`", "where the built-in sample is built once "
     "(default `~/.cache/facehpo`)"),
]
# Read only by docker-compose.yml (from .env), which turns them into flags of its commands.
COMPOSE_ENV = [
    ("FACEHPO_MODEL", "init --model"), ("FACEHPO_TRIALS", "init --trials"),
    ("FACEHPO_EPOCHS", "init --epochs"), ("FACEHPO_SEED", "init / fine --seed"),
    ("FACEHPO_K", "fine --top"), ("FACEHPO_FINE_TRIALS", "fine --trials"),
    ("FACEHPO_FINE_EPOCHS", "fine --epochs"), ("FACEHPO_FINAL_EPOCHS", "final --epochs"),
    ("FACEHPO_IMAGE", "the image to run"), ("FACEHPO_EXTRAS", "pip extras built into the image"),
]


def _commands(parser: argparse.ArgumentParser, prefix: str = ""):
    """(name, help, parser) of every leaf command, in the parser's order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                full = f"{prefix}{name}"
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    yield from _commands(sub, full + " ")
                else:
                    yield full, helps.get(name, ""), sub


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices:
        return "|".join(map(str, action.choices))
    return action.metavar or action.dest.upper()


def render() -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps usage lines to the terminal: fix the width
    try:
        return _render(build_parser())
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _render(parser: argparse.ArgumentParser) -> str:
    out = ["# facehpo command reference", "",
           "Generated from the parser (`python -m study.reference > docs/cli.md`); do not edit by "
           "hand. Every setting: command-line flag > environment variable > default. Exit codes: "
           "0 done, 1 setup failure (one line on stderr), 2 bad command line, 3 internal error, "
           "4 `train` diverged, 5 a `sanity` check failed, 130 SIGINT, 143 SIGTERM.", ""]
    for name, text, sub in _commands(parser):
        out += [f"## facehpo {name}", "", _cell(text), "", "```", sub.format_usage().strip(), "```", "",
                "| flag | value | meaning |", "|---|---|---|"]
        for a in sub._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            default = "" if a.default is None or a.default is False or a.default == argparse.SUPPRESS \
                else f" (default {a.default})"
            shown = a.help or ""
            if default and "default" not in shown:
                shown += default
            out.append(f"| `{', '.join(a.option_strings)}` | {_cell(_value(a))} | {_cell(shown)}"
                       f"{' **required**' if a.required else ''} |")
        out.append("")
    out += ["## Environment variables", "",
            "Set by a flag too (the flag wins), or by the environment only:", "",
            "| variable | flag | default | meaning |", "|---|---|---|---|"]
    seen = set()
    for cls in CONFIGS:
        for o in options(cls):
            if o.env and o.env not in seen:
                seen.add(o.env)
                out.append(f"| `{o.env}` | {f'`{o.flag}`' if o.flag else '(none)'} | "
                           f"{'' if o.default is None else _cell(o.default)} | {_cell(o.help)} |")
    out += ["", "Read outside the command line:", "", "| variable | used by | meaning |", "|---|---|---|"]
    out += [f"| `{n}` | {w} | {_cell(m)} |" for n, w, m in OTHER_ENV]
    out += ["", "Read only by `docker-compose.yml` from `.env` (the CLI never reads them; compose "
            "passes them as the flags named):", "", "| variable | becomes |", "|---|---|"]
    out += [f"| `{n}` | `{f}` |" for n, f in COMPOSE_ENV]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
