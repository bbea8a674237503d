"""Execute every lecture headless and publish it as an offline course site under _site/.

For each numbered notebook in nbs/ this writes an executed copy (`_site/<name>.ipynb`) and an HTML page
(`_site/<name>.html`) with a navigation bar. Each lecture runs in its own process so its peak memory is its own.
The site's other pages: the course start page (`index.html`, from nbs/index.ipynb), the glossary (`glossary.html`,
from data/glossary.json), every lecture's claims (`claims.html`, `claims.csv`) and each lecture's wall time and
peak memory (`timings.html`, `timings.csv`).

The site works offline: maths is typeset by the MathJax copy that installs with the environment (PyPI
jupyter-server-mathjax, copied into `_site/mathjax/`), and no page loads anything from another host (no require.js,
no widget renderer, no CDN). Widget outputs show the static image each explorer puts beside its widget.
`publish_page` is the one page writer: `tools/test_notebooks.py --site DIR` uses it for the quick-profile site that
`make test` builds from the notebooks it has just run.

Lectures run in the `lecture` profile (the sizes their findings need) unless `--profile quick`.
Each lecture's claims (tlcourse.evaluate.Claims) are collected into `_site/claims.html` and
`_site/claims.csv`. In the lecture profile the build exits non-zero when a lecture fails or
a claim its summary states does not hold, naming the lecture and the claim; the quick
profile shows claims without enforcing them.

    python tools/build_course.py                  # all lectures, feature cache as it is
    python tools/build_course.py --cold           # with an empty cache (the budget is measured this way)
    python tools/build_course.py --profile quick  # tiny sizes: every code path in seconds
    python tools/build_course.py nbs/10_why_transfer.ipynb
"""
import argparse, functools, html, json, os, re, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 240           # each lecture: at most 4 minutes on 2 cores
BUDGET_MB = 3072         # and within 3 GB
GLOSSARY = ROOT / "data" / "glossary.json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# jupyter-server-mathjax ships MathJax 2.7 with one combined configuration and the HTML-CSS output with STIX-Web fonts
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
MATHJAX_PARTS = ("MathJax.js", "LICENSE", "config", "extensions", "jax/input", "jax/element", "jax/output/HTML-CSS",
                 "fonts/HTML-CSS/STIX-Web/woff")
MATHJAX_SKIP = {"a11y"}  # the accessibility explorer (3.7 MB) is loaded only from MathJax's menu; the site does not offer it
PAGE_STYLE = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
              "td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}")
NAV_STYLE = ("nav.tlcourse-nav{font-family:sans-serif;font-size:14px;display:flex;flex-wrap:wrap;gap:.3em 1.2em;"
             "align-items:baseline;padding:.5em 1em;margin:0 0 1em;background:#f3f5f7;border-bottom:1px solid #d0d7de}"
             "nav.tlcourse-nav a{color:#0550ae;text-decoration:none}nav.tlcourse-nav a:hover{text-decoration:underline}"
             "nav.tlcourse-nav details ol{margin:.3em 0;padding-left:1.6em;column-width:22em}"
             "nav.tlcourse-nav summary{cursor:pointer;color:#0550ae}nav.tlcourse-nav .here{font-weight:bold}")


def read_claims(path: Path) -> tuple[str | None, list[dict]]:
    "(profile, claims) a lecture wrote with Claims.report(), or (None, []) when it stated none."
    if not path.exists(): return None, []
    data = json.loads(path.read_text())
    return data.get("profile"), list(data.get("claims", []))


# ---------------------------------------------------------------- the page writer (make course and make test)
def notebook_title(nb, default: str) -> str:
    "The text of a notebook's first `# ` heading (nbformat node or plain JSON dict), else `default`."
    for cell in nb["cells"]:
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if cell["cell_type"] == "markdown" and source.startswith("# "):
            return source.splitlines()[0].lstrip("# ").strip()
    return default


def site_lectures(notebooks) -> list[tuple[str, str]]:
    "(stem, title) of each numbered notebook among `notebooks`, in file-name order: the site's list of lectures."
    numbered = sorted((Path(p) for p in notebooks if re.match(r"\d", Path(p).name)), key=lambda p: p.name)
    return [(p.stem, notebook_title(json.loads(p.read_text(encoding="utf-8")), p.stem)) for p in numbered]


def nav_bar(current: str, lectures: list[tuple[str, str]]) -> str:
    "The bar on top of every page: start page, glossary, claims, timings, previous/next lecture, the list of lectures."
    link = lambda href, text: (f"<span class='here'>{html.escape(text)}</span>" if Path(href).stem == current
                               else f"<a href='{href}'>{html.escape(text)}</a>")
    items = [link("index.html", "Start"), link("glossary.html", "Glossary"), link("claims.html", "Claims"),
             link("timings.html", "Timings")]
    stems = [stem for stem, _ in lectures]
    if current in stems:
        i = stems.index(current)
        if i > 0: items.append(f"<a href='{stems[i - 1]}.html' rel='prev'>&larr; {html.escape(lectures[i - 1][1])}</a>")
        if i + 1 < len(stems): items.append(f"<a href='{stems[i + 1]}.html' rel='next'>{html.escape(lectures[i + 1][1])} &rarr;</a>")
    listing = "".join(f"<li>{link(f'{stem}.html', title)}</li>" for stem, title in lectures)
    items.append(f"<details><summary>Lectures ({len(lectures)})</summary><ol>{listing}</ol></details>")
    return f"<style>{NAV_STYLE}</style><nav class='tlcourse-nav'>{''.join(items)}</nav>"


def strip_widgets(nb):
    """Drop live-widget views and the notebook's widget state, in place: a static page cannot run a widget.

    Each explorer displays {widget view, image/png, text/plain}; without the widget view the page shows its image."""
    for cell in nb.cells:
        if cell.get("cell_type") != "code": continue
        for out in cell.get("outputs", []):
            out.get("data", {}).pop(WIDGET_VIEW, None)
        # an output that was nothing but a widget view is dropped whole
        cell["outputs"] = [o for o in cell.get("outputs", []) if o.get("output_type") not in ("display_data", "execute_result")
                           or o.get("data")]
    nb.metadata.pop("widgets", None)
    return nb


def _for_reading(nb):
    "A copy of `nb` as a reader sees it: no `#| hide` cells, no `#|` directive lines, no widget views."
    import copy
    nb = strip_widgets(copy.deepcopy(nb))
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            lines = cell.source.splitlines()
            directives = [l[2:].strip() for l in lines if l.startswith("#|")]
            if "hide" in directives: continue
            cell.source = "\n".join(l for l in lines if not l.startswith("#|")).strip("\n")
            if not cell.source.strip() and not cell.get("outputs"): continue  # e.g. the `#| default_exp` cell
        cells.append(cell)
    nb.cells = cells
    return nb


_OFFLINE_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{#- tlcourse's offline page: the lab template without require.js, the widget renderer and mermaid (all from CDNs),
    MathJax from the site's own copy, and the course's navigation bar on top. -#}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [["$", "$"], ["\\(", "\\)"]], displayMath: [["$$", "$$"], ["\\[", "\\]"]],
            processEscapes: true, processEnvironments: true},
  TeX: {equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null,
               linebreaks: {automatic: true}},
  displayAlign: "center", messageStyle: "none"
});
MathJax.Hub.Register.StartupHook("End", function () { document.documentElement.dataset.mathjax = "done"; });
</script>
<script src="{{ resources.mathjax_url }}"></script>
{#- the hidden MathML kept for screen readers would ask for MathJax's TeX fonts (\mathbb, \mathcal...), which this copy
    does not ship: it inherits the page's font; what a reader sees is typeset with STIX-Web -#}
<style>.MJX_Assistive_MathML [mathvariant] { font-family: inherit !important; }</style>
{%- endblock html_head_js_mathjax -%}
{%- block body_header -%}
{{ super() }}
{{ resources.tlcourse_nav }}
{%- endblock body_header -%}
"""


@functools.lru_cache(maxsize=None)
def _exporter():
    "nbconvert's lab HTML exporter with the offline template (built once per process)."
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"tlcourse_offline.html.j2": _OFFLINE_TEMPLATE})],
                            template_file="tlcourse_offline.html.j2")
    exporter.mathjax_url = f"mathjax/MathJax.js?config={MATHJAX_CONFIG}"
    exporter.require_js_url = exporter.widget_renderer_url = exporter.jupyter_widgets_base_url = ""
    return exporter


def mathjax_source() -> Path:
    "The MathJax 2.7 folder of the installed jupyter-server-mathjax, or a clear error saying how to get it."
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise SystemExit("tlcourse: the course site needs the MathJax copy from jupyter-server-mathjax, which is not "
                         "installed. Run `make env` (it is a dev requirement) or `pip install jupyter-server-mathjax==0.2.6`.")
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def copy_mathjax(site: Path) -> Path:
    "Copy the MathJax files a page needs into `site/mathjax/` (once per site); return that folder."
    source, target = mathjax_source(), site / "mathjax"
    stamp = target / ".tlcourse-copied"
    if stamp.exists(): return target
    for part in MATHJAX_PARTS:
        src = source / part
        if src.is_dir():
            shutil.copytree(src, target / part, dirs_exist_ok=True, ignore=lambda d, names: [n for n in names if n in MATHJAX_SKIP])
        else:
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / part)
    stamp.write_text("MathJax copied from jupyter-server-mathjax by tools/build_course.py\n")
    return target


def page_html(nb, current: str, lectures: list[tuple[str, str]]) -> str:
    "One notebook as an offline HTML page with the navigation bar; links to a lecture's .ipynb point at its page."
    body, _ = _exporter().from_notebook_node(_for_reading(nb), resources={"tlcourse_nav": nav_bar(current, lectures)})
    pages = {stem for stem, _ in lectures} | {"index"}
    return re.sub(r"""href=(["'])(\w+)\.ipynb""", lambda m: f"href={m[1]}{m[2]}.html" if m[2] in pages else m[0], body)


def publish_page(nb, site: Path, stem: str, lectures: list[tuple[str, str]]) -> Path:
    "Write `site/<stem>.html` for an (executed) notebook; the start page (stem 'index') becomes index.html."
    site.mkdir(parents=True, exist_ok=True)
    copy_mathjax(site)
    target = site / f"{stem}.html"
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # a reader never sees half a page
    partial.write_text(page_html(nb, stem, lectures), encoding="utf-8")
    os.replace(partial, target)
    return target


def simple_page(title: str, current: str, lectures: list[tuple[str, str]], body: str) -> str:
    "A plain site page (glossary, claims, timings) with the navigation bar."
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{PAGE_STYLE}</style></head><body>{nav_bar(current, lectures)}<h1>{html.escape(title)}</h1>{body}</body></html>")


def read_glossary(path: Path | None = None) -> list[dict] | None:
    "The glossary entries (term, definition, notebook, anchor) in `path` (default data/glossary.json); None when absent."
    path = Path(path) if path is not None else GLOSSARY
    if not path.exists(): return None
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of {{term, definition, notebook, anchor}} objects, got {type(entries).__name__}")
    for i, e in enumerate(entries):
        missing = [k for k in ("term", "definition", "notebook", "anchor") if not isinstance(e, dict) or not e.get(k)]
        if missing:
            label = e.get("term") or "no term" if isinstance(e, dict) else repr(e)
            raise ValueError(f"{path}: entry {i} ({label}) lacks "
                             f"{', '.join(missing)}; every entry needs term, definition, notebook (e.g. '60_domain.ipynb') "
                             "and anchor (e.g. 'term-few-shot')")
    return entries


def glossary_page(entries: list[dict] | None, lectures: list[tuple[str, str]], source: Path | None = None) -> str:
    "Each term with its definition and a link to the lecture cell that teaches it (`<lecture>.html#<anchor>`)."
    if entries is None:
        return simple_page("Glossary", "glossary", lectures,
                           f"<p>No glossary yet: {html.escape(str(source or GLOSSARY.relative_to(ROOT)))} does not exist in this build.</p>")
    titles = dict(lectures)
    rows = []
    for e in sorted(entries, key=lambda e: e["term"].lower()):
        stem = Path(e["notebook"]).stem
        where = titles.get(stem, stem)
        # a lecture this build did not publish (a partial site) is named, not linked
        link = (f"<a href='{stem}.html#{html.escape(e['anchor'])}'>{html.escape(where)}</a>" if stem in titles
                else f"{html.escape(where)} (not in this build)")
        rows.append(f"<tr id='glossary-{html.escape(e['anchor'])}'><td><b>{html.escape(e['term'])}</b></td>"
                    f"<td>{html.escape(e['definition'])}</td><td>{link}</td></tr>")
    return simple_page("Glossary", "glossary", lectures,
                       f"<p>{len(entries)} terms, each linked to the lecture cell that teaches it.</p>"
                       "<table><tr><th>Term</th><th>Definition</th><th>Taught in</th></tr>" + "".join(rows) + "</table>")


def timings_page(rows: list[dict], lectures: list[tuple[str, str]], note: str) -> str:
    "Each lecture's link, time and memory against the budget, and how many of its claims hold."
    lines = []
    for r in rows:
        peak = r.get("peak_mb")
        ok = r["error"] is None and r["wall_s"] <= BUDGET_S and (peak is None or peak <= BUDGET_MB)
        status = "ok" if ok else (r["error"] or "over budget")
        link = Path(r["notebook"]).with_suffix(".html").name
        claims = r.get("claims", [])
        held = f"{sum(c['holds'] for c in claims)} of {len(claims)}" if claims else ""
        lines.append(f"<tr><td><a href='{link}'>{html.escape(r['title'])}</a></td><td>{r['notebook']}</td>"
                     f"<td>{r['wall_s']:.1f}</td><td>{'' if peak is None else peak}</td><td>{held}</td><td>{html.escape(status)}</td></tr>")
    return simple_page("Timings: each lecture's run", "timings", lectures,
                       f"<p>{html.escape(note)} Budget per lecture in the lecture profile: {BUDGET_S} s and {BUDGET_MB} MB.</p>"
                       "<table><tr><th>Lecture</th><th>Notebook</th><th>Wall time (s)</th><th>Peak memory (MB)</th>"
                       "<th>Claims holding</th><th>Status</th></tr>" + "".join(lines) + "</table>")


def claims_page(rows: list[dict], profile: str, lectures: list[tuple[str, str]] = ()) -> str:
    "One page listing every lecture's claims with the values this build measured."
    body = []
    for r in rows:
        if not r.get("claims"): continue
        link = Path(r["notebook"]).with_suffix(".html").name
        body.append(f"<h2><a href='{link}'>{html.escape(r['title'])}</a></h2><table>"
                    "<tr><th>Claim</th><th>Measured</th><th>Test</th><th>Holds</th></tr>")
        for c in r["claims"]:
            mark = "<span style='color:#1a7f37'>yes</span>" if c["holds"] else "<b style='color:#cf222e'>no</b>"
            body.append(f"<tr><td>{html.escape(c['claim'])}</td><td>{html.escape(c['measured'])}</td>"
                        f"<td>{html.escape(c['test'])}</td><td>{mark}</td></tr>")
        body.append("</table>")
    n = sum(len(r.get("claims", [])) for r in rows)
    held = sum(c["holds"] for r in rows for c in r.get("claims", []))
    return simple_page("What each lecture's run found", "claims", list(lectures),
                       f"<p>Profile <b>{profile}</b>: {held} of {n} claims hold on this build. "
                       "Each claim is a sentence of a lecture's summary, the numbers its run measured, and the test that decides it "
                       "(a paired 95% interval over seeds, or a margin).</p>" + "".join(body))


def write_site_pages(site: Path, rows: list[dict], profile: str, lectures: list[tuple[str, str]], note: str,
                     start_page: Path | None = None, glossary: Path | None = None) -> None:
    """The pages beside the lectures: glossary, claims (+ csv), timings (+ csv), and the start page when `start_page`
    (an unexecuted nbs/index.ipynb) is given; a caller that ran the start page publishes it itself."""
    import csv
    site.mkdir(parents=True, exist_ok=True)
    copy_mathjax(site)
    if start_page is not None and start_page.exists():
        import nbformat
        publish_page(nbformat.read(start_page, as_version=4), site, "index", lectures)
    (site / "glossary.html").write_text(glossary_page(read_glossary(glossary), lectures, glossary), encoding="utf-8")
    (site / "timings.html").write_text(timings_page(rows, lectures, note), encoding="utf-8")
    (site / "claims.html").write_text(claims_page(rows, profile, lectures), encoding="utf-8")
    with open(site / "claims.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["notebook", "lecture", "claim", "measured", "test", "holds", "profile"])
        for r in rows:
            for c in r.get("claims", []):
                writer.writerow([r["notebook"], r["title"], c["claim"], c["measured"], c["test"], c["holds"], profile])
    with open(site / "timings.csv", "w") as f:
        f.write("notebook,wall_s,peak_mb,status\n")
        for r in rows: f.write(f"{r['notebook']},{r['wall_s']},{'' if r.get('peak_mb') is None else r['peak_mb']},"
                               f"{'ok' if r['error'] is None else 'failed'}\n")


# ---------------------------------------------------------------- make course: one lecture per process
def run_one(nb_path: Path, out_dir: Path) -> dict:
    "Execute one notebook in this process's kernel child; write the executed .ipynb; return its stats."
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(nb_path, as_version=4)
    start, error = time.perf_counter(), None
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(nb_path.parent)}})
    try:
        client.execute()
    except Exception as e:  # keep the partly executed notebook: it shows where it failed
        last_line = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()[-1:] or [""]  # drop terminal colours
        error = f"{type(e).__name__}: {last_line[0]}"
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
    nbformat.write(nb, out_dir / nb_path.name)
    return dict(notebook=nb_path.name, title=notebook_title(nb, nb_path.stem), wall_s=round(wall, 1), peak_mb=round(peak_mb), error=error)


def verdict(rows: list[dict], profile: str) -> int:
    """The build's exit status, with the reasons printed: 1 when a lecture failed, or, in the lecture profile only, when a
    claim a lecture's summary states does not hold (the quick profile's tiny runs show claims without enforcing them)."""
    failed = [r["notebook"] for r in rows if r["error"]]
    if failed: print("Lectures that failed: " + ", ".join(failed), file=sys.stderr)
    broken = [(r["notebook"], c["claim"]) for r in rows for c in r.get("claims", []) if not c["holds"]]
    if broken and profile == "lecture":
        print("Claims that do not hold in the lecture profile:", *[f"  {nb}: {claim}" for nb, claim in broken],
              sep="\n", file=sys.stderr)
    elif broken:
        print(f"{len(broken)} claims do not hold in the quick profile (expected: its runs are tiny; not enforced).")
    return 1 if failed or (broken and profile == "lecture") else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path, help="lectures to run (default: every numbered notebook in nbs/)")
    ap.add_argument("--cold", action="store_true", help="run with an empty feature cache")
    ap.add_argument("--profile", choices=("lecture", "quick"), default="lecture",
                    help="experiment sizes: 'lecture' (default; claims enforced) or 'quick' (tiny; claims shown only)")
    ap.add_argument("--site", type=Path, default=ROOT / "_site", help="where to write the site (default: _site/)")
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # internal: run one notebook, print its stats as JSON
    args = ap.parse_args()
    SITE = args.site.resolve()
    SITE.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(run_one(args.one.resolve(), SITE))); return 0
    nbs = [p.resolve() for p in args.notebooks] or sorted((ROOT / "nbs").glob("[0-9]*.ipynb"))
    missing = [str(p) for p in nbs if not p.exists()]
    if missing: ap.error(f"no such notebook: {', '.join(missing)}")
    lectures = site_lectures(nbs)
    mathjax_source()  # fail now, not after an hour of lectures, when the MathJax copy is missing
    # the kernel must draw figures inline (headless) so they land in the executed notebook and its HTML page
    env = dict(os.environ, MPLBACKEND="module://matplotlib_inline.backend_inline", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TLCOURSE_PROFILE=args.profile)
    env.pop("IN_TEST", None)
    claims_dir = SITE / "claims"
    claims_dir.mkdir(exist_ok=True)
    cold_dir = tempfile.TemporaryDirectory() if args.cold else None
    if cold_dir: env["TLCOURSE_CACHE"] = cold_dir.name
    rows = []
    for nb in nbs:
        print(f"running {nb.name} ({args.profile} profile) ...", flush=True)
        claims_file = claims_dir / f"{nb.stem}.json"
        claims_file.unlink(missing_ok=True)  # a claim counts only if this run stated it
        r = subprocess.run([sys.executable, __file__, "--one", str(nb), "--site", str(SITE)], env=dict(env, TLCOURSE_CLAIMS_FILE=str(claims_file)),
                           capture_output=True, text=True)
        if r.returncode != 0:
            rows.append(dict(notebook=nb.name, title=nb.stem, wall_s=0.0, peak_mb=0, error=r.stderr.strip()[-300:], claims=[])); continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        rows[-1]["claims"] = read_claims(claims_file)[1]
        import nbformat
        publish_page(nbformat.read(SITE / nb.name, as_version=4), SITE, nb.stem, lectures)
        failed = [c for c in rows[-1]["claims"] if not c["holds"]]
        print(f"  {rows[-1]['wall_s']:.1f} s, peak {rows[-1]['peak_mb']} MB, "
              f"{len(rows[-1]['claims']) - len(failed)} of {len(rows[-1]['claims'])} claims hold"
              + (f", FAILED: {rows[-1]['error']}" if rows[-1]["error"] else ""), flush=True)
        for c in failed: print(f"  claim does not hold: {c['claim']} (measured {c['measured']}; test: {c['test']})", flush=True)
    write_site_pages(SITE, rows, args.profile, lectures, start_page=ROOT / "nbs" / "index.ipynb",
                     note=f"Executed headless by `make course` ({args.profile} profile{', cold feature cache' if args.cold else ''}).")
    if read_glossary() is None: print(f"note: {GLOSSARY.relative_to(ROOT)} does not exist yet, so the glossary page is empty")
    print("\n| lecture | wall time (s) | peak memory (MB) | status |\n|---|---|---|---|")
    for r in rows:
        over = r["wall_s"] > BUDGET_S or r["peak_mb"] > BUDGET_MB
        print(f"| {r['notebook']} | {r['wall_s']:.1f} | {r['peak_mb']} | {'FAILED' if r['error'] else 'over budget' if over else 'ok'} |")
    print(f"\ntotal {sum(r['wall_s'] for r in rows):.1f} s; site written to {SITE}/index.html, claims in {SITE}/claims.html")
    return verdict(rows, args.profile)

if __name__ == "__main__":
    sys.exit(main())
