"""Writes docs/cli.md, every flag of the four command-line tools, from their
parsers (so it cannot drift; tests/test_docs.py checks it is current).

    python tools/cli_reference.py          # rewrite docs/cli.md
"""

from __future__ import annotations

import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import app  # noqa: E402
import evaluate  # noqa: E402
import sample  # noqa: E402
import train  # noqa: E402

OUT = os.path.join(ROOT, "docs", "cli.md")
TOOLS = (train, sample, evaluate, app)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _help(action: argparse.Action) -> str:
    """The help line, less a "(default: ...)" the default column shows."""
    text = _cell(action.help or "")
    return re.sub(r"\s*\(default: [^()]*\)$", "", text) if _default(action) else text


def _flag(action: argparse.Action) -> str:
    names = ", ".join(f"`{name}`" for name in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or (
        "{" + ",".join(map(str, action.choices)) + "}" if action.choices
        else action.dest.upper())
    return f"{names} {_cell(metavar)}"


def _default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.default in (None, "", argparse.SUPPRESS):
        return ""
    if isinstance(action.default, tuple):
        return f"`{','.join(map(str, action.default))}`" if action.default else ""
    return f"`{action.default}`"


def section(module) -> str:
    """One tool's flags as a Markdown table, grouped as in its --help."""
    parser = module.make_parser()
    lines = [f"## `{parser.prog}`", "", _cell(parser.description), ""]
    for group in parser._action_groups:  # argparse keeps no public list
        actions = [a for a in group._group_actions if a.dest != "help"]
        if not actions:
            continue
        if group.title not in ("options", "optional arguments"):
            lines += [f"**{group.title}**", ""]
        lines += ["| flag | default | what it does |", "|---|---|---|"]
        lines += [f"| {_flag(a)} | {_default(a)} | {_help(a)} |"
                  for a in actions]
        lines.append("")
    return "\n".join(lines)


def reference() -> str:
    """The whole of docs/cli.md."""
    head = ("# Command-line reference\n\n"
            "Every flag of the four tools, generated from their parsers by "
            "`python tools/cli_reference.py` (`tests/test_docs.py` fails when this "
            "page is out of date). The flags of `train.py` are the fields of "
            "`Config` and `RunOptions` in `gan/config.py`; \"(recipe)\" marks the "
            "settings a resumed run must keep. Bad input is one line on stderr "
            "and exit code 2.\n")
    return head + "\n" + "\n".join(section(m) for m in TOOLS)


if __name__ == "__main__":
    with open(OUT, "w") as f:
        f.write(reference())
    print(f"wrote {os.path.relpath(OUT, ROOT)}")
