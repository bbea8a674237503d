"""Execute every lecture headless and publish it under _site/.

For each numbered notebook in nbs/ this writes an executed copy (`_site/<name>.ipynb`)
and an HTML page (`_site/<name>.html`); then an index page with each lecture's wall
time and peak memory (`_site/index.html`, also `_site/timings.csv`). Each lecture runs
in its own process so its peak memory is its own.

    python tools/build_course.py            # all lectures, feature cache as it is
    python tools/build_course.py --cold     # with an empty cache (the budget is measured this way)
    python tools/build_course.py nbs/10_why_transfer.ipynb
"""
import argparse, html, json, os, re, resource, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "_site"
BUDGET_S = 240           # each lecture: at most 4 minutes on 2 cores
BUDGET_MB = 3072         # and within 3 GB


def run_one(nb_path: Path, out_dir: Path) -> dict:
    "Execute one notebook in this process's kernel child; write .ipynb and .html; return its stats."
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter
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
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    (out_dir / nb_path.with_suffix(".html").name).write_text(body, encoding="utf-8")
    title = next((c.source.splitlines()[0].lstrip("# ").strip() for c in nb.cells
                  if c.cell_type == "markdown" and c.source.startswith("# ")), nb_path.stem)
    return dict(notebook=nb_path.name, title=title, wall_s=round(wall, 1), peak_mb=round(peak_mb), error=error)


def index_page(rows: list[dict]) -> str:
    "The course index: one row per lecture with its link, time and memory against the budget."
    lines = []
    for r in rows:
        ok = r["error"] is None and r["wall_s"] <= BUDGET_S and r["peak_mb"] <= BUDGET_MB
        status = "ok" if ok else (r["error"] or "over budget")
        link = Path(r["notebook"]).with_suffix(".html").name
        lines.append(f"<tr><td><a href='{link}'>{html.escape(r['title'])}</a></td><td>{r['notebook']}</td>"
                     f"<td>{r['wall_s']:.1f}</td><td>{r['peak_mb']}</td><td>{html.escape(status)}</td></tr>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>tlcourse</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:.3em .8em;border-bottom:1px solid #ddd}"
            "</style></head><body><h1>tlcourse: transfer learning, lecture by lecture</h1>"
            "<p><a href='index-notebook.html'>Course start page</a> (syllabus and how to run).</p>"
            f"<p>Executed headless on this machine; budget per lecture {BUDGET_S} s and {BUDGET_MB} MB.</p>"
            "<table><tr><th>Lecture</th><th>Notebook</th><th>Wall time (s)</th><th>Peak memory (MB)</th><th>Status</th></tr>"
            + "".join(lines) + "</table></body></html>")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path, help="lectures to run (default: every numbered notebook in nbs/)")
    ap.add_argument("--cold", action="store_true", help="run with an empty feature cache")
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # internal: run one notebook, print its stats as JSON
    args = ap.parse_args()
    SITE.mkdir(exist_ok=True)
    if args.one:
        print(json.dumps(run_one(args.one.resolve(), SITE))); return 0
    nbs = [p.resolve() for p in args.notebooks] or sorted((ROOT / "nbs").glob("[0-9]*.ipynb"))
    # the kernel must draw figures inline (headless) so they land in the executed notebook and its HTML page
    env = dict(os.environ, MPLBACKEND="module://matplotlib_inline.backend_inline", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cold_dir = tempfile.TemporaryDirectory() if args.cold else None
    if cold_dir: env["TLCOURSE_CACHE"] = cold_dir.name
    rows = []
    for nb in nbs:
        print(f"running {nb.name} ...", flush=True)
        r = subprocess.run([sys.executable, __file__, "--one", str(nb)], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            rows.append(dict(notebook=nb.name, title=nb.stem, wall_s=0.0, peak_mb=0, error=r.stderr.strip()[-300:])); continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(f"  {rows[-1]['wall_s']:.1f} s, peak {rows[-1]['peak_mb']} MB" + (f", FAILED: {rows[-1]['error']}" if rows[-1]["error"] else ""), flush=True)
    start_page = ROOT / "nbs" / "index.ipynb"
    if start_page.exists():
        import nbformat
        from nbconvert import HTMLExporter
        body, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(start_page, as_version=4))
        (SITE / "index-notebook.html").write_text(body, encoding="utf-8")
    (SITE / "index.html").write_text(index_page(rows), encoding="utf-8")
    with open(SITE / "timings.csv", "w") as f:
        f.write("notebook,wall_s,peak_mb,status\n")
        for r in rows: f.write(f"{r['notebook']},{r['wall_s']},{r['peak_mb']},{'ok' if r['error'] is None else 'failed'}\n")
    print("\n| lecture | wall time (s) | peak memory (MB) | status |\n|---|---|---|---|")
    for r in rows:
        over = r["wall_s"] > BUDGET_S or r["peak_mb"] > BUDGET_MB
        print(f"| {r['notebook']} | {r['wall_s']:.1f} | {r['peak_mb']} | {'FAILED' if r['error'] else 'over budget' if over else 'ok'} |")
    print(f"\ntotal {sum(r['wall_s'] for r in rows):.1f} s; site written to {SITE}/index.html")
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
