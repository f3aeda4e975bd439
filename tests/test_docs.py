"""The docs stay true: docs/cli.md is what the parsers say, and every relative
link and image in README.md and docs/*.md resolves (a file, and a heading for
an anchor)."""

from __future__ import annotations

import glob
import os
import re

import pytest

from tests.test_cli import ROOT
from tools import cli_reference

PAGES = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs",
                                                                         "*.md")))]
# [text](target) and ![alt](target); code spans and fenced blocks are removed first.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_the_cli_reference_is_current():
    with open(cli_reference.OUT) as f:
        assert f.read() == cli_reference.reference(), (
            "docs/cli.md is out of date: run python tools/cli_reference.py")


def _text(path: str) -> str:
    with open(path) as f:
        text = f.read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)       # fenced code
    return re.sub(r"`[^`\n]*`", "", text)                    # inline code


def _anchors(path: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    anchors = set()
    for line in _text(path).splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            slug = re.sub(r"[^\w\- ]", "", m[1].strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def _links():
    for page in PAGES:
        for target in LINK.findall(_text(page)):
            if not re.match(r"[a-z]+:", target):                # http:, mailto:
                yield page, target


@pytest.mark.parametrize("page,target", list(_links()),
                         ids=lambda v: os.path.relpath(v, ROOT) if os.path.isabs(v) else v)
def test_every_relative_link_and_image_resolves(page, target):
    path, _, anchor = target.partition("#")
    resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
    assert os.path.exists(resolved), f"{os.path.relpath(page, ROOT)}: {target} is missing"
    if anchor and resolved.endswith(".md"):
        assert anchor in _anchors(resolved), (
            f"{os.path.relpath(page, ROOT)}: no heading for #{anchor} in "
            f"{os.path.relpath(resolved, ROOT)}")
