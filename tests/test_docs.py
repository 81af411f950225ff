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
README_MAX_LINES = 160  # the README is a front page; the user guide lives in docs/

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


def resolve(doc, path):
    """The repository path a link ``path`` (no #fragment) in the Markdown file ``doc`` points at, normalised
    without touching the file system (``a/../b`` -> ``b``); None when it climbs above the repository root."""
    parts = []
    for part in (Path(doc).parent / path if path else Path(doc)).parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts) or "."


def broken_links(doc):
    """``[(target, why)]`` for the relative links of the tracked Markdown file ``doc``."""
    tracked = set(tracked_files())
    folders = {str(Path(p).parent) for p in tracked}
    folders |= {str(parent) for p in tracked for parent in Path(p).parents}
    broken = []
    for target in relative_links((ROOT / doc).read_text(encoding="utf-8")):
        path, _, fragment = target.partition("#")
        if path.startswith("/"):
            broken.append((target, "absolute path"))
            continue
        name = resolve(doc, path)
        if name is not None:
            if name not in tracked and name.rstrip("/") not in folders:
                broken.append((target, f"{name} is not a file or folder of the repository"))
            elif fragment and name.endswith(".md") and name in tracked:
                if fragment.lower() not in anchors((ROOT / name).read_text(encoding="utf-8")):
                    broken.append((target, f"{name} has no heading with the anchor #{fragment}"))
            continue
        broken.append((target, "points above the repository root"))
    return broken


def reachable(start, read):
    """Every Markdown file reachable from ``start`` by relative links, ``start`` included; ``read(path)`` gives
    a file's text, or None for a file that is not a Markdown document of the repository."""
    seen, todo = {start}, [start]
    while todo:
        doc = todo.pop()
        for target in relative_links(read(doc)):
            name = resolve(doc, target.partition("#")[0])
            if name is not None and name not in seen and name.endswith(".md") and read(name) is not None:
                seen.add(name)
                todo.append(name)
    return seen


def code_blocks(markdown):
    """The lines of the fenced code blocks of a Markdown text, each stripped of a trailing ``# comment``."""
    return [line.split(" #")[0].strip() for block in FENCE.finditer(markdown)
            for line in block.group(0).splitlines()[1:-1]]


def ci_commands():
    """The install and test commands of .ci/run: its lines that run something from the virtual environment."""
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if ".venv/bin/" in line and not line.lstrip().startswith("#")]


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


def test_reachability_follows_links_between_pages():
    pages = {"README.md": "[a](docs/A.md#x) [cfg](configs/README.md)", "docs/A.md": "[b](B.md) [up](../README.md)",
             "docs/B.md": "[code](../train_net.py)", "docs/C.md": "[a](A.md)", "configs/README.md": ""}
    assert reachable("README.md", pages.get) == {"README.md", "docs/A.md", "docs/B.md", "configs/README.md"}
    assert code_blocks("x\n```bash\npip install a   # 1. install\n.venv/bin/python -m pytest -q tests\n```\n") == \
        ["pip install a", ".venv/bin/python -m pytest -q tests"]


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


# ---------------------------------------------------------------------------------- the README as a front page
def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the details to a page under docs/")


def test_every_doc_page_is_reachable_from_the_readme():
    docs = set(markdown_docs())

    def read(path):
        return (ROOT / path).read_text(encoding="utf-8") if path in docs else None

    unreachable = sorted(docs - reachable("README.md", read))
    assert not unreachable, "no chain of links from README.md reaches " + ", ".join(unreachable)


def test_readme_shows_the_ci_install_and_test_commands():
    commands = ci_commands()
    assert len(commands) == 2 and "pip install" in commands[0] and "pytest" in commands[1], commands
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = code_blocks(readme)
    missing = [c for c in commands if c not in shown]
    assert not missing, f"README.md does not show .ci/run's command(s) verbatim in a code block: {missing}"
    assert "`bash .ci/run`" in readme
