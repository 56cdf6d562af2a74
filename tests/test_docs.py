"""The front door and the rooms: links a reader can follow. (How long a file may be is a habit, not a
count: ruff, configured in pyproject.toml and run by .ci/run, keeps lines to 119 columns.)

* Every page in docs/ is one click from the README.
* Every relative link in the README and docs/ names a file of this repository (never one outside
  it) and, with a #fragment, a heading that exists in that file (GitHub's anchor rule).
"""
import os
import re

from conftest import ROOT

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def pages() -> list[str]:
    docs = os.path.join(ROOT, "docs")
    return ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(docs) if f.endswith(".md"))


def anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: str) -> set[str]:
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)          # a '#' comment in a code block is no heading
    return {anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def links(page: str) -> list[str]:
    text = open(os.path.join(ROOT, page), encoding="utf-8").read()
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]     # not http:, mailto:


def test_every_doc_is_one_click_from_the_readme():
    targets = {os.path.normpath(t.split("#")[0]) for t in links("README.md")}
    missing = [p for p in pages()[1:] if p not in targets]
    assert not missing, f"not linked from README.md: {missing}"


def test_every_link_resolves_inside_the_repository():
    bad = []
    for page in pages():
        for target in links(page):
            path, _, frag = target.partition("#")
            full = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else \
                os.path.join(ROOT, page)
            rel = os.path.relpath(full, ROOT)
            if rel.startswith(".."):
                bad.append(f"{page}: {target} points outside the repository")
            elif not os.path.exists(full):
                bad.append(f"{page}: {target} does not exist")
            elif frag and full.endswith(".md") and frag not in anchors(full):
                bad.append(f"{page}: {target} names no heading of {rel}")
    assert not bad, "\n".join(bad)


def test_the_checks_can_fail(tmp_path):
    """The anchor rule on the headings used above, and a dangling link is seen as one."""
    assert anchor("Benchmarks: `python -m bench`") == "benchmarks-python--m-bench"
    assert anchor("What the default run's charts show") == "what-the-default-runs-charts-show"
    assert LINK.findall("see [a](docs/x.md#y) and [b](https://e.org)") == ["docs/x.md#y", "https://e.org"]
    (tmp_path / "p.md").write_text("# Top\n```\n# not a heading\n```\n")
    assert anchors(str(tmp_path / "p.md")) == {"top"}
