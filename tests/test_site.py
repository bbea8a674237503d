"""The offline course site's page writer (tools/build_course.py), without a browser: navigation, local MathJax, no
script or stylesheet from another host, widget views replaced by their image, the glossary's links; and the quick
runner (tools/test_notebooks.py --site) publishing what it ran. tests/test_browser.py checks the pages in chromium."""
import base64, json, re, subprocess, sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_course  # noqa: E402

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
LECTURES = [("10_first", "First lecture"), ("20_second", "Second lecture"), ("30_third", "Third lecture")]


class Page(HTMLParser):
    "What a page loads (script src, stylesheet href, img src), its links and its element ids."
    def __init__(self, text: str):
        super().__init__()
        self.loads, self.links, self.ids, self.rel, self._rel = [], [], set(), {}, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"): self.ids.add(a["id"])
        if tag in ("script", "img", "iframe", "source") and a.get("src"): self.loads.append(a["src"])
        if tag == "link" and a.get("href"): self.loads.append(a["href"])
        if tag == "a" and a.get("href"): self.links.append(a["href"])
        if tag == "a" and a.get("rel"): self._rel = a["rel"]; self.rel[a["rel"]] = (a.get("href"), "")

    def handle_data(self, data):
        if self._rel: self.rel[self._rel] = (self.rel[self._rel][0], self.rel[self._rel][1] + data)

    def handle_endtag(self, tag):
        if tag == "a": self._rel = None


def png_bytes() -> str:
    "A real small PNG (matplotlib's toolbar icon), base64 as in a notebook's display bundle."
    import matplotlib
    return base64.b64encode((Path(matplotlib.get_data_path()) / "images" / "home.png").read_bytes()).decode()


def lecture(title: str, extra_cells=()):
    from nbformat.v4 import new_markdown_cell, new_notebook
    return new_notebook(cells=[new_markdown_cell(f"# {title}\n\nThe loss is $\\ell(x) = x^2$:\n\n$$\\sum_i \\ell(x_i)$$"),
                               *extra_cells])


def explorer_output_notebook():
    "A lecture whose code cell displayed an explorer: {widget view, image/png, text/plain}, with widget state saved."
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_output
    bundle = {WIDGET_VIEW: {"model_id": "f00d", "version_major": 2, "version_minor": 0},
              "image/png": png_bytes(), "text/plain": "Explorer(layer=3)"}
    nb = lecture("Second lecture", [
        new_code_cell("#| default_exp explore"),
        new_markdown_cell('<a id="term-few-shot"></a>\n**Few-shot** learning uses a handful of labels per class.'),
        new_code_cell("#| export\nexplorer = show_explorer()", outputs=[new_output("display_data", data=bundle)]),
        new_code_cell("live = only_a_widget()", outputs=[new_output("display_data", data={WIDGET_VIEW: bundle[WIDGET_VIEW]})]),
        new_code_cell("#| hide\nhidden_guard = 1")])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"version_major": 2, "version_minor": 0, "state": {}}}
    return nb


@pytest.fixture
def site(tmp_path):
    site = tmp_path / "site"
    build_course.publish_page(lecture("First lecture"), site, "10_first", LECTURES)
    build_course.publish_page(explorer_output_notebook(), site, "20_second", LECTURES)
    build_course.publish_page(lecture("Third lecture"), site, "30_third", LECTURES)
    from nbformat.v4 import new_markdown_cell, new_notebook
    build_course.publish_page(new_notebook(cells=[new_markdown_cell("# Start\n\nBegin with [lecture 1](10_first.ipynb).")]),
                              site, "index", LECTURES)
    return site


def test_every_page_has_the_navigation_bar(site):
    second = Page((site / "20_second.html").read_text())
    for target in ("index.html", "glossary.html", "claims.html", "timings.html", "10_first.html", "30_third.html"):
        assert target in second.links, f"the navigation bar lacks a link to {target}"
    assert second.rel == {"prev": ("10_first.html", "\u2190 First lecture"), "next": ("30_third.html", "Third lecture \u2192")}
    first = Page((site / "10_first.html").read_text())
    assert first.rel == {"next": ("20_second.html", "Second lecture \u2192")}  # the first lecture has no previous one
    # a markdown link to a lecture's notebook leads to its page
    assert "10_first.html" in Page((site / "index.html").read_text()).links


def test_pages_load_mathjax_from_the_site_and_nothing_from_another_host(site):
    for page in site.glob("*.html"):
        loads = Page(page.read_text()).loads
        outside = [src for src in loads if urlsplit(src).scheme in ("http", "https") or src.startswith("//")]
        assert not outside, f"{page.name} loads {outside} from another host"
        mathjax = [src for src in loads if "MathJax.js" in src]
        assert mathjax == [f"mathjax/MathJax.js?config={build_course.MATHJAX_CONFIG}"], (page.name, mathjax)
    copied = site / "mathjax"
    assert (copied / "MathJax.js").is_file() and (copied / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file()
    assert any((copied / "fonts" / "HTML-CSS" / "STIX-Web" / "woff").rglob("*.woff")), "the web fonts are missing"
    assert not (copied / "extensions" / "a11y").exists()


def test_widget_views_are_replaced_by_their_image(site):
    text = (site / "20_second.html").read_text()
    assert WIDGET_VIEW not in text and "widget-state+json" not in text
    assert png_bytes()[:200] in text, "the explorer's static image is missing from the page"
    assert "show_explorer" in text and "only_a_widget" in text  # the code stays; an output that was only a widget goes
    assert "hidden_guard" not in text and "#| export" not in text  # hidden cells and nbdev directives are not shown
    assert len(re.findall(r'class="[^"]*jp-CodeCell', text)) == 2, "a cell of directives only is shown as an empty cell"
    assert 'id="term-few-shot"' in text, "nbconvert dropped the glossary anchor"


def test_strip_widgets_keeps_the_other_outputs():
    nb = explorer_output_notebook()
    build_course.strip_widgets(nb)
    code = [c for c in nb.cells if c.cell_type == "code" and c.outputs]
    assert list(code[0].outputs[0].data) == ["image/png", "text/plain"]
    assert len(code) == 1 and "widgets" not in nb.metadata  # the output that was only a widget view is gone


def glossary_file(tmp_path, entries) -> Path:
    path = tmp_path / "glossary.json"
    path.write_text(json.dumps(entries))
    return path


def test_glossary_page_lists_each_term_with_a_working_link(site, tmp_path):
    entries = [{"term": "few-shot", "definition": "Learning from a handful of labelled examples per class.",
                "notebook": "20_second.ipynb", "anchor": "term-few-shot"},
               {"term": "AudioSet", "definition": "Two million labelled sound clips.",
                "notebook": "99_missing.ipynb", "anchor": "term-audioset"}]
    build_course.write_site_pages(site, [], "quick", LECTURES, note="test.", glossary=glossary_file(tmp_path, entries))
    page = Page((site / "glossary.html").read_text())
    text = (site / "glossary.html").read_text()
    assert "few-shot" in text and "AudioSet" in text and "Two million labelled sound clips." in text
    links = [link for link in page.links if "#" in link]
    assert links == ["20_second.html#term-few-shot"]  # a lecture this build did not publish is named, not linked
    target, anchor = links[0].split("#")
    assert anchor in Page((site / target).read_text()).ids
    assert "99_missing (not in this build)" in text


def test_glossary_page_without_a_glossary_says_so(site, tmp_path):
    build_course.write_site_pages(site, [], "quick", LECTURES, note="test.", glossary=tmp_path / "absent.json")
    assert "No glossary yet" in (site / "glossary.html").read_text()
    for name in ("claims.html", "timings.html", "claims.csv", "timings.csv"):
        assert (site / name).exists()


def test_a_malformed_glossary_entry_is_named(tmp_path):
    path = glossary_file(tmp_path, [{"term": "few-shot", "definition": "...", "notebook": "60_domain.ipynb"}])
    with pytest.raises(ValueError, match=r"entry 0 \(few-shot\) lacks anchor"):
        build_course.read_glossary(path)
    with pytest.raises(ValueError, match="expected a JSON list"):
        build_course.read_glossary(glossary_file(tmp_path, {"few-shot": "..."}))


def test_quick_runner_publishes_what_it_ran(tmp_path):
    "tools/test_notebooks.py --site: each notebook's page shows the outputs of its one run; claims fill; failures fail."
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
    import nbformat
    good = tmp_path / "91_good.ipynb"
    nbformat.write(new_notebook(cells=[
        new_markdown_cell("# A good lecture\n\nIts value is $2^{10}$."),
        new_code_cell("import os\nfrom tlcourse.evaluate import Claims\nprint('ran in test mode:', os.environ.get('IN_TEST'))"),
        new_code_cell("claims = Claims()\nclaims.greater('the value is above one', 2.0, 1.0)\nclaims.report()"),
        new_code_cell("#| eval: false\nprint('never ' + 'run')")],
        metadata={"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}), good)
    bad = tmp_path / "92_bad.ipynb"
    nbformat.write(new_notebook(cells=[new_markdown_cell("# A failing lecture"), new_code_cell("print('before')"),
                                       new_code_cell("assert 1 == 2, 'boom'")]), bad)
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "test_notebooks.py"), "--workers", "2", "--site", str(site),
                        str(good), str(bad)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "FAILED 92_bad.ipynb" in r.stdout and "boom" in r.stderr, r.stdout + r.stderr
    page = (site / "91_good.html").read_text()
    assert "ran in test mode: 1" in page and "never run" not in page
    assert "A failing lecture" in (site / "92_bad.html").read_text() and "before" in (site / "92_bad.html").read_text()
    claims = (site / "claims.html").read_text()
    assert "the value is above one" in claims and "1 of 1 claims hold" in claims
    timings = (site / "timings.html").read_text()
    assert "91_good.html" in timings and "failed" in timings
    assert Page(page).rel["next"][0] == "92_bad.html" and (site / "index.html").exists()
