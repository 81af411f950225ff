"""The documentation is self-contained: no tracked text file points outside the repository, and every
relative link in the Markdown docs reaches a tracked file (and, with a #fragment, one of its headings)."""
import functools
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEXT_SUFFIXES = (".md", ".py", ".yml", ".txt")
LINKED_DOCS = ("README.md", "configs/README.md")  # plus every docs/**/*.md

# Places that exist on a developer's machine but not in a clone. Written in pieces so that this file
# does not match itself.
OUTSIDE_PATTERNS = {
    "the shared folder beside the checkout": re.compile(re.escape("..") + r"/+" + "shared" + r"\b"),
    "the work folder of the development machine": re.compile(r"(?<![\w.])/" + "work" + r"/"),
    "a home folder": re.compile(r"(?<![\w.])(?:/" + "home" + r"/[\w.-]+|/" + "root" + r"/|/" + "Users"
                                + r"/[\w.-]+|~/)"),
}

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


@functools.lru_cache(maxsize=None)
def tracked_files():
    try:
        # tracked files, and new ones not yet added (so a new doc is checked before its commit)
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return tuple(sorted({p for p in out.decode().split("\0") if p}))


def tracked_text_files():
    return [p for p in tracked_files() if p.endswith(TEXT_SUFFIXES) and (ROOT / p).is_file()]


def markdown_docs():
    return [p for p in tracked_files()
            if p in LINKED_DOCS or (p.startswith("docs/") and p.endswith(".md"))]


def outside_references(text):
    """``[(line number, what, matched text)]`` for every reference to a place outside the repository."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in OUTSIDE_PATTERNS.items():
            found += [(number, what, m.group(0)) for m in pattern.finditer(line)]
    return found


def github_slug(heading):
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown):
    """The set of #fragments the headings of a Markdown text define (duplicates get -1, -2, ...)."""
    seen, result = {}, set()
    for m in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", FENCE.sub("", markdown), re.M):
        slug = github_slug(m.group(1))
        result.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return result


def relative_links(markdown):
    """Link targets of a Markdown text, outside code, that are neither URLs nor e-mail addresses."""
    text = INLINE_CODE.sub("", FENCE.sub("", markdown))
    return [t for t in LINK.findall(text) if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", t)]


def broken_links(doc):
    """``[(target, why)]`` for the relative links of the tracked Markdown file ``doc``."""
    tracked = set(tracked_files())
    folders = {str(Path(p).parent) for p in tracked}
    folders |= {str(parent) for p in tracked for parent in Path(p).parents}
    broken = []
    for target in relative_links((ROOT / doc).read_text(encoding="utf-8")):
        path, _, fragment = target.partition("#")
        resolved = Path(doc).parent / path if path else Path(doc)
        if path.startswith("/"):
            broken.append((target, "absolute path"))
            continue
        parts = []
        for part in resolved.parts:  # normalise a/../b without touching the file system
            if part == "..":
                if not parts:
                    break
                parts.pop()
            elif part != ".":
                parts.append(part)
        else:
            name = "/".join(parts) or "."
            if name not in tracked and name.rstrip("/") not in folders:
                broken.append((target, f"{name} is not a file or folder of the repository"))
            elif fragment and name.endswith(".md") and name in tracked:
                if fragment.lower() not in anchors((ROOT / name).read_text(encoding="utf-8")):
                    broken.append((target, f"{name} has no heading with the anchor #{fragment}"))
            continue
        broken.append((target, "points above the repository root"))
    return broken


# ---------------------------------------------------------------------------------- the checker itself
def test_outside_patterns_catch_what_they_should():
    assert [w for _, w, _ in outside_references("see " + ".." + "/shared/paper/x.txt")] == \
        ["the shared folder beside the checkout"]
    assert outside_references("open /" + "work/main/README.md")
    assert outside_references("cache in /" + "home/alice/.cache")
    assert outside_references("cache in ~" + "/.cache")
    assert outside_references("python /" + "root/x.py")
    assert not outside_references("python tools/reproduce.py --out /tmp/qs; network/work/x; ../configs/a.yml")


def test_link_parsing_and_slugs():
    text = ("[a](docs/PAPER.md#the-x) ![img](fig.png) [web](https://example.org) [mail](mailto:a@b.c)\n"
            "`[code](nope.md)`\n```\n[fenced](nope.md)\n```\n[multi\nline](#anchor)\n")
    assert relative_links(text) == ["docs/PAPER.md#the-x", "fig.png", "#anchor"]
    assert github_slug("Dual-branch Feature Extraction (Sec. III-A)") == "dual-branch-feature-extraction-sec-iii-a"
    assert github_slug("Details the paper leaves open, taken from the authors' released code") == \
        "details-the-paper-leaves-open-taken-from-the-authors-released-code"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


# ---------------------------------------------------------------------------------- the repository
def test_there_are_docs_to_check():
    docs = markdown_docs()
    assert "README.md" in docs and "docs/PAPER.md" in docs
    assert len(tracked_text_files()) > 50


@pytest.mark.parametrize("path", tracked_text_files())
def test_no_reference_outside_the_repository(path):
    if path == "tests/test_docs.py":
        return
    found = outside_references((ROOT / path).read_text(encoding="utf-8", errors="replace"))
    assert not found, f"{path} refers to places a clone does not have: " + "; ".join(
        f"line {n}: {m!r} ({what})" for n, what, m in found)


@pytest.mark.parametrize("doc", markdown_docs())
def test_relative_links_resolve(doc):
    broken = broken_links(doc)
    assert not broken, f"{doc}: broken links: " + "; ".join(f"{t} ({why})" for t, why in broken)
