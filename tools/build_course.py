"""Execute every lecture headless and publish it under _site/.

For each numbered notebook in nbs/ this writes an executed copy (`_site/<name>.ipynb`)
and an HTML page (`_site/<name>.html`); then an index page with each lecture's wall
time and peak memory (`_site/index.html`, also `_site/timings.csv`). Each lecture runs
in its own process so its peak memory is its own.

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
import argparse, html, json, os, re, resource, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 240           # each lecture: at most 4 minutes on 2 cores
BUDGET_MB = 3072         # and within 3 GB


def read_claims(path: Path) -> tuple[str | None, list[dict]]:
    "(profile, claims) a lecture wrote with Claims.report(), or (None, []) when it stated none."
    if not path.exists(): return None, []
    data = json.loads(path.read_text())
    return data.get("profile"), list(data.get("claims", []))


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
        claims = r.get("claims", [])
        held = f"{sum(c['holds'] for c in claims)} of {len(claims)}" if claims else ""
        lines.append(f"<tr><td><a href='{link}'>{html.escape(r['title'])}</a></td><td>{r['notebook']}</td>"
                     f"<td>{r['wall_s']:.1f}</td><td>{r['peak_mb']}</td><td>{held}</td><td>{html.escape(status)}</td></tr>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>tlcourse</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:.3em .8em;border-bottom:1px solid #ddd}"
            "</style></head><body><h1>tlcourse: transfer learning, lecture by lecture</h1>"
            "<p><a href='index-notebook.html'>Course start page</a> (syllabus and how to run). "
            "<a href='claims.html'>Every lecture's claims</a>, with the values this build measured.</p>"
            f"<p>Executed headless on this machine; budget per lecture {BUDGET_S} s and {BUDGET_MB} MB.</p>"
            "<table><tr><th>Lecture</th><th>Notebook</th><th>Wall time (s)</th><th>Peak memory (MB)</th><th>Claims holding</th><th>Status</th></tr>"
            + "".join(lines) + "</table></body></html>")


def claims_page(rows: list[dict], profile: str) -> str:
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
    return ("<!doctype html><html><head><meta charset='utf-8'><title>tlcourse: claims</title><style>"
            "body{font-family:sans-serif;max-width:70em;margin:2em auto}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;"
            "text-align:left;vertical-align:top}</style></head><body><h1>What each lecture's run found</h1>"
            f"<p><a href='index.html'>Back to the course</a>. Profile <b>{profile}</b>: {held} of {n} claims hold on this build. "
            "Each claim is a sentence of a lecture's summary, the numbers its run measured, and the test that decides it "
            "(a paired 95% interval over seeds, or a margin).</p>" + "".join(body) + "</body></html>")


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
        failed = [c for c in rows[-1]["claims"] if not c["holds"]]
        print(f"  {rows[-1]['wall_s']:.1f} s, peak {rows[-1]['peak_mb']} MB, "
              f"{len(rows[-1]['claims']) - len(failed)} of {len(rows[-1]['claims'])} claims hold"
              + (f", FAILED: {rows[-1]['error']}" if rows[-1]["error"] else ""), flush=True)
        for c in failed: print(f"  claim does not hold: {c['claim']} (measured {c['measured']}; test: {c['test']})", flush=True)
    start_page = ROOT / "nbs" / "index.ipynb"
    if start_page.exists():
        import nbformat
        from nbconvert import HTMLExporter
        body, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(start_page, as_version=4))
        (SITE / "index-notebook.html").write_text(body, encoding="utf-8")
    (SITE / "index.html").write_text(index_page(rows), encoding="utf-8")
    (SITE / "claims.html").write_text(claims_page(rows, args.profile), encoding="utf-8")
    import csv
    with open(SITE / "claims.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["notebook", "lecture", "claim", "measured", "test", "holds", "profile"])
        for r in rows:
            for c in r.get("claims", []):
                writer.writerow([r["notebook"], r["title"], c["claim"], c["measured"], c["test"], c["holds"], args.profile])
    with open(SITE / "timings.csv", "w") as f:
        f.write("notebook,wall_s,peak_mb,status\n")
        for r in rows: f.write(f"{r['notebook']},{r['wall_s']},{r['peak_mb']},{'ok' if r['error'] is None else 'failed'}\n")
    print("\n| lecture | wall time (s) | peak memory (MB) | status |\n|---|---|---|---|")
    for r in rows:
        over = r["wall_s"] > BUDGET_S or r["peak_mb"] > BUDGET_MB
        print(f"| {r['notebook']} | {r['wall_s']:.1f} | {r['peak_mb']} | {'FAILED' if r['error'] else 'over budget' if over else 'ok'} |")
    print(f"\ntotal {sum(r['wall_s'] for r in rows):.1f} s; site written to {SITE}/index.html, claims in {SITE}/claims.html")
    failed = [r["notebook"] for r in rows if r["error"]]
    if failed: print("Lectures that failed: " + ", ".join(failed), file=sys.stderr)
    broken = [(r["notebook"], c["claim"]) for r in rows for c in r.get("claims", []) if not c["holds"]]
    if broken and args.profile == "lecture":
        print("Claims that do not hold in the lecture profile:", *[f"  {nb}: {claim}" for nb, claim in broken],
              sep="\n", file=sys.stderr)
    elif broken:
        print(f"{len(broken)} claims do not hold in the quick profile (expected: its runs are tiny; not enforced).")
    return 1 if failed or (broken and args.profile == "lecture") else 0


if __name__ == "__main__":
    sys.exit(main())
