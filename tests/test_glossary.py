"""data/glossary.json: the course's 40 key terms, each defined and linked to the lecture cell that teaches it.

A link is `<notebook>#<anchor>`: the notebook in nbs/ must have a markdown cell that starts with `<a id="<anchor>"></a>`
(a cell may start with several anchors, one per line) and that names the term."""
import json, re
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "data" / "glossary.json"
NBS = ROOT / "nbs"
# terms the issue found untaught (issue 17): each must now have a lecture cell
REQUIRED = ["adversarial domain adaptation", "AudioSet", "Common Crawl", "cross-task", "few-shot", "generative pre-training",
            "inductive transfer", "transductive transfer", "transfer efficiency", "unsupervised transfer"]
LEADING_ANCHORS = re.compile(r'\A(?:\s*<a id="([^"]+)"></a>)+')
ANCHOR = re.compile(r'<a id="([^"]+)"></a>')


def entries() -> list[dict]:
    return json.loads(GLOSSARY.read_text(encoding="utf-8"))


def slug(term: str) -> str:
    "The anchor of a term: 'term-' + its lowercase words joined by '-'."
    return "term-" + re.sub(r"[^a-z0-9]+", "-", term.lower()).strip("-")


@lru_cache(maxsize=None)
def markdown_cells(notebook: str) -> tuple[str, ...]:
    nb = json.loads((NBS / notebook).read_text(encoding="utf-8"))
    return tuple("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                 for c in nb["cells"] if c["cell_type"] == "markdown")


def leading_anchors(text: str) -> list[str]:
    "The ids of the anchors a cell starts with."
    head = LEADING_ANCHORS.match(text)
    return ANCHOR.findall(head.group(0)) if head else []


def plain(text: str) -> str:
    "Cell text as a reader sees it, for finding a term: no anchors, no emphasis or code marks, spaces collapsed."
    return re.sub(r"\s+", " ", re.sub(r"[*_`]", "", ANCHOR.sub("", text))).lower()


def test_the_glossary_has_forty_well_formed_entries():
    glossary = entries()
    assert isinstance(glossary, list) and len(glossary) == 40, f"{GLOSSARY} must list exactly 40 terms, has {len(glossary)}"
    for i, e in enumerate(glossary):
        assert isinstance(e, dict) and set(e) == {"term", "definition", "notebook", "anchor"}, \
            f"entry {i} must have exactly term, definition, notebook and anchor, got {e}"
        assert all(isinstance(v, str) and v.strip() for v in e.values()), f"entry {i} ({e.get('term')}) has an empty field"
        assert e["anchor"] == slug(e["term"]), f"{e['term']!r}: its anchor must be {slug(e['term'])!r}, got {e['anchor']!r}"
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", e["definition"].strip()) if s]
        assert 1 <= len(sentences) <= 2, f"{e['term']!r}: a definition is one or two sentences, got {len(sentences)}"


def test_terms_and_anchors_are_unique():
    glossary = entries()
    terms = [e["term"].lower() for e in glossary]
    anchors = [e["anchor"] for e in glossary]
    assert len(set(terms)) == len(terms), f"duplicate terms: {sorted({t for t in terms if terms.count(t) > 1})}"
    assert len(set(anchors)) == len(anchors), f"duplicate anchors: {sorted({a for a in anchors if anchors.count(a) > 1})}"


def test_the_ten_untaught_terms_are_in_it():
    terms = {e["term"].lower() for e in entries()}
    missing = [t for t in REQUIRED if t.lower() not in terms]
    assert not missing, f"the glossary lacks the required terms {missing}"


@pytest.mark.parametrize("entry", entries(), ids=lambda e: e["term"])
def test_each_term_links_to_a_cell_that_teaches_it(entry):
    term, notebook, anchor = entry["term"], entry["notebook"], entry["anchor"]
    assert (NBS / notebook).is_file(), f"{term!r} links to {notebook}, which is not a notebook in nbs/"
    cells = [text for text in markdown_cells(notebook) if anchor in leading_anchors(text)]
    assert cells, (f"{term!r}: no markdown cell of {notebook} starts with <a id=\"{anchor}\"></a>, so the glossary link "
                   f"{notebook}#{anchor} points nowhere; put the anchor at the start of the cell that teaches the term")
    assert len(cells) == 1, f"{term!r}: {len(cells)} cells of {notebook} carry the anchor {anchor}; keep one"
    assert term.lower() in plain(cells[0]), \
        f"{term!r}: the cell of {notebook} anchored {anchor} never names the term, so it does not teach it"


def test_no_anchor_is_used_twice_in_the_course():
    seen = {}
    for path in sorted(NBS.glob("*.ipynb")):
        for text in markdown_cells(path.name):
            for anchor in ANCHOR.findall(text):
                if anchor.startswith("term-"): seen.setdefault(anchor, []).append(path.name)
    twice = {a: where for a, where in seen.items() if len(where) > 1}
    assert not twice, f"glossary anchors used by more than one cell (a link would be ambiguous): {twice}"
