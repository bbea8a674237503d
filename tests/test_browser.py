"""The course in a real browser: Debian's chromium driven by Playwright (never Playwright's own browser download).

1. JupyterLab started the way `make lab` starts it (tools/lab.sh, a free port, a token, the quick profile) opens the
   start page and lecture 1, runs the lecture, shows a figure, and redraws the lecture's explorer when its control moves.
2. The quick-profile course site (`make test` builds it in .cache/site-quick/) works offline: every page opens, every
   internal link and #anchor exists, every formula is typeset by the site's own MathJax, and no page asks any other
   host for anything (requests to other hosts are blocked and counted).

Screenshots go to .cache/screenshots/ (git-ignored); their paths are printed. Without chromium the tests skip and say
how to enable them, except where the CI variable is set: there they fail.
"""
import functools, http.server, json, os, re, secrets, signal, socket, subprocess, sys, threading, time
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("TLCOURSE_CHROMIUM", "/usr/bin/chromium"))
QUICK_SITE = ROOT / ".cache" / "site-quick"
SCREENSHOTS = ROOT / ".cache" / "screenshots"
LECTURE_ONE = "nbs/10_why_transfer.ipynb"
# notebooks for a small quick site when the one `make test` builds is missing (pytest run alone): the start page and a
# short lecture with formulas
FALLBACK_SITE_NOTEBOOKS = ("nbs/index.ipynb", "nbs/22_representations.ipynb")
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOW_TO_ENABLE = (f"No browser at {CHROMIUM}. To run the browser test, install Debian's chromium as root "
                 "(apt-get install --no-install-recommends chromium; `make test` does this itself when it runs as root "
                 "with apt-get) or set TLCOURSE_CHROMIUM to a Chromium 156 binary. Never run `playwright install`.")


def browser_or_skip():
    "Playwright's sync API, or a skip saying how to enable the test (a failure when CI is set: CI must run it)."
    problem = None
    if not CHROMIUM.exists():
        problem = HOW_TO_ENABLE
    else:
        try:
            from playwright.sync_api import sync_playwright
            return sync_playwright
        except ImportError:
            problem = "Playwright is not installed: run `make env` (playwright==1.64.1 is a dev requirement)."
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser test. {problem}")
    pytest.skip(problem)


class Browser:
    "One chromium with a fresh profile; every request to another host is blocked and counted."
    def __init__(self, sync_playwright, profile: Path):
        self._pw = sync_playwright().start()
        self.context = self._pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=FLAGS, viewport={"width": 1280, "height": 900})
        self.outside: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()

    def _route(self, route, request):
        if urlsplit(request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.outside.append(request.url)
            route.abort()

    def screenshot(self, name: str, locator=None) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        (locator or self.page).screenshot(path=str(path), **({} if locator else {"full_page": False}))
        print(f"screenshot: {path}")
        return path

    def close(self):
        self.context.close()
        self._pw.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------ JupyterLab
def start_lab(tmp: Path) -> tuple[subprocess.Popen, str, Path]:
    "tools/lab.sh (what `make lab` runs) on a free port with a token; this test's own runtime and settings folders."
    port, token = free_port(), secrets.token_hex(16)
    settings = tmp / "lab-user-settings"
    # the test must never write into the course's notebooks: no autosave; every cell in the page (no windowing)
    for plugin, values in {"@jupyterlab/docmanager-extension/plugin": {"autosave": False},
                           "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"}}.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(os.environ, PORT=str(port), JUPYTER_TOKEN=token, TLCOURSE_PROFILE="quick",
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"))
    # as a student's shell: not nbdev's test mode, and matplotlib's inline backend (make test exports MPLBACKEND=Agg,
    # under which a kernel would draw no figure)
    for name in ("IN_TEST", "MPLBACKEND", "TLCOURSE_CLAIMS_FILE"): env.pop(name, None)
    log = tmp / "lab.log"
    proc = subprocess.Popen(["bash", str(ROOT / "tools" / "lab.sh")], cwd=ROOT, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            request = urllib.request.Request(f"{base}/api/status", headers={"Authorization": f"token {token}"})
            with urllib.request.urlopen(request, timeout=2) as r:
                if r.status == 200: break
        except OSError:
            pass
        if time.time() > deadline:
            stop_lab(proc)
            pytest.fail(f"JupyterLab did not answer within 120 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    return proc, f"{base}/lab/tree/{{path}}?token={token}", log


def stop_lab(proc: subprocess.Popen):
    "Stop JupyterLab by its own process id (lab.sh execs it): SIGTERM shuts its kernels down; SIGKILL if it hangs."
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on show
NOTEBOOK_STATE = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const text = e => e.textContent.trim();
  return {
    prompts: Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt'), text),
    status: (panel.querySelector('.jp-Notebook-ExecutionIndicator') || {getAttribute: () => null}).getAttribute('data-status'),
    errors: Array.from(panel.querySelectorAll('[data-mime-type="application/vnd.jupyter.error"]'), e => text(e).slice(-800)),
    figures: panel.querySelectorAll('.jp-OutputArea-output img').length,
    explorers: panel.querySelectorAll('.tlcourse-explorer').length,
  };
}"""


def wait_for_kernel_idle(page, timeout_s: float):
    "Wait until the status bar reports the current notebook's kernel idle (started and connected)."
    page.wait_for_function("() => Array.from(document.querySelectorAll('.jp-StatusBar-TextItem'))"
                           ".some(e => /\\|\\s*Idle\\s*$/.test(e.textContent.trim()))", timeout=timeout_s * 1000)


def run_all_and_wait(page, timeout_s: float) -> dict:
    """Run every cell of the open notebook (Run > Run All Cells) and wait until each has run and the kernel is idle.

    A Run All given while the kernel is still connecting can be dropped: it is given again while no cell has started."""
    def run_all():
        page.locator(f"{PANEL} .jp-Cell").first.click()  # the menu acts on the current notebook: make it this one
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator('li.lm-Menu-item[data-command="runmenu:run-all"]').click()
    run_all()
    start, deadline, state, tries = time.time(), time.time() + timeout_s, None, 1
    while time.time() < deadline:
        state = page.evaluate(NOTEBOOK_STATE)
        if state and state["errors"]:
            pytest.fail(f"lecture 1 raised in JupyterLab:\n{state['errors'][0]}")
        if state and state["prompts"] and state["status"] == "idle" and all(re.fullmatch(r"\[\d+\]:", p) for p in state["prompts"]):
            return state
        if state and all(p == "[ ]:" for p in state["prompts"]) and time.time() - start > 5 * tries and tries < 4:
            run_all()
            tries += 1
        time.sleep(0.5)
    pytest.fail(f"lecture 1 did not finish within {timeout_s:.0f} s; last state: {state}")


def move_control(explorer):
    "Move the explorer's control one step: a dropdown to its next option, a slider one step right."
    select = explorer.locator("select")
    if select.count():
        options = select.first.locator("option")
        current = select.first.evaluate("s => s.selectedIndex")
        select.first.select_option(index=(current + 1) % options.count())
        return
    handle = explorer.locator(".noUi-handle")
    if handle.count():
        handle.first.focus()
        handle.first.press("ArrowRight")
        return
    pytest.fail("the explorer has neither a dropdown nor a slider to move")


def test_jupyterlab_runs_lecture_one_and_its_explorer_responds(tmp_path):
    sync_playwright = browser_or_skip()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    start = time.time()
    proc, url, log = start_lab(tmp_path)
    browser = None
    try:
        browser = Browser(sync_playwright, tmp_path / "chromium-profile")
        page = browser.page
        page.goto(url.format(path="nbs/index.ipynb"))
        page.wait_for_selector(f"{PANEL} .jp-Cell", timeout=90_000)
        page.locator(f"{PANEL} .jp-RenderedMarkdown h1", has_text="tlcourse").first.wait_for(timeout=30_000)
        browser.screenshot("lab-start-page")
        # open lecture 1 from the file browser as a student would (no page reload), else by its URL
        entry = page.locator(".jp-DirListing-itemText", has_text=re.compile(f"^{re.escape(Path(LECTURE_ONE).name)}$")).first
        try:
            entry.wait_for(timeout=10_000)
            entry.dblclick()
        except PlaywrightTimeout:
            page.goto(url.format(path=LECTURE_ONE))
        # its tab is the current one (the window title shortens long names)
        page.wait_for_selector(f".lm-TabBar-tab.lm-mod-current[title*={json.dumps(Path(LECTURE_ONE).name)}]", timeout=60_000)
        wait_for_kernel_idle(page, timeout_s=120)
        state = run_all_and_wait(page, timeout_s=600)
        assert state["figures"] >= 1, "lecture 1 ran but no figure (an <img> in an output area) appeared"
        figure = page.locator(f"{PANEL} .jp-OutputArea-output img").first
        figure.scroll_into_view_if_needed()
        browser.screenshot("lab-lecture1-figure")
        assert state["explorers"] >= 1, "lecture 1 shows no explorer (an element with class tlcourse-explorer)"
        explorer = page.locator(f"{PANEL} .tlcourse-explorer").first
        explorer.scroll_into_view_if_needed()
        image = explorer.locator("img").first
        image.wait_for(timeout=30_000)
        before = image.get_attribute("src")
        browser.screenshot("lab-lecture1-explorer-before", explorer)
        move_control(explorer)
        page.wait_for_function("([e, before]) => { const i = e.querySelector('img'); return i && i.src !== before; }",
                               arg=[explorer.element_handle(), image.evaluate("i => i.src")], timeout=30_000)
        browser.screenshot("lab-lecture1-explorer-after", explorer)
        assert image.get_attribute("src") != before
        # a course that runs offline does not ask to fetch Jupyter news (tools/lab-settings/overrides.json)
        assert page.get_by_text("official Jupyter news").count() == 0, "JupyterLab asked about Jupyter news"
        assert browser.outside == [], f"JupyterLab asked other hosts for {browser.outside}"
    finally:
        if browser: browser.close()
        stop_lab(proc)
    print(f"JupyterLab part: {time.time() - start:.1f} s")


# ------------------------------------------------------------------------------------------------ the quick site
def quick_site(tmp_path: Path) -> Path:
    "The quick-profile site `make test` built; when absent (pytest run alone), a small one built here the same way."
    if (QUICK_SITE / "index.html").exists():
        return QUICK_SITE
    site = tmp_path / "site-quick"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "test_notebooks.py"), "--workers", "1", "--site", str(site),
                        *[str(ROOT / nb) for nb in FALLBACK_SITE_NOTEBOOKS]],
                       cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1"))
    assert r.returncode == 0, f"building a quick site failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return site


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


PAGE_FACTS = """() => {
  const markdown = Array.from(document.querySelectorAll('.jp-RenderedMarkdown, .jp-RenderedHTMLCommon'))
    .map(e => e.innerText).join('\\n');
  return {
    ids: Array.from(document.querySelectorAll('[id]'), e => e.id).concat(
         Array.from(document.querySelectorAll('a[name]'), e => e.name)),
    links: Array.from(document.querySelectorAll('a[href]'), a => a.href),
    formulas: document.querySelectorAll('script[type^="math/tex"]').length,
    typeset: document.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_SVG, .MathJax_CHTML').length,
    errors: document.querySelectorAll('.MathJax_Error, merror, .mjx-merror').length,
    raw: (markdown.match(/\\$\\$|\\\\begin\\{|\\\\\\[/g) || []).length,
    nav: !!document.querySelector('nav.tlcourse-nav'),
  };
}"""


def test_quick_site_works_offline(tmp_path):
    sync_playwright = browser_or_skip()
    start = time.time()
    site = quick_site(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    browser = None
    try:
        browser = Browser(sync_playwright, tmp_path / "chromium-profile")
        page, failed = browser.page, []
        page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
        page.on("requestfailed", lambda r: urlsplit(r.url).hostname in LOCAL_HOSTS and failed.append(f"failed {r.url}"))
        pages = sorted(p.name for p in site.glob("*.html"))
        assert {"index.html", "glossary.html", "claims.html", "timings.html"} <= set(pages), pages
        facts, shot = {}, None
        for name in pages:
            page.goto(base + name)
            if page.locator("script[src*='MathJax.js']").count():
                page.wait_for_function("() => document.documentElement.dataset.mathjax === 'done'", timeout=60_000)
            facts[name] = page.evaluate(PAGE_FACTS)
            f = facts[name]
            assert f["nav"], f"{name} has no navigation bar"
            assert f["errors"] == 0, f"{name}: MathJax reported {f['errors']} errors"
            assert f["raw"] == 0, f"{name}: {f['raw']} formulas were left as TeX source"
            assert f["typeset"] >= f["formulas"], f"{name}: {f['formulas']} formulas but {f['typeset']} typeset"
            if name in ("index.html", "glossary.html"): browser.screenshot(f"site-{name[:-5]}")
            if f["formulas"] and shot is None: shot = browser.screenshot(f"site-formulas-{name[:-5]}")
        assert sum(f["formulas"] for f in facts.values()) > 0, "no page of the quick site has a formula to check"
        # every internal link leads to a page of the site, and its #anchor exists there
        broken = []
        for name, f in facts.items():
            for link in f["links"]:
                parts = urlsplit(link)
                if parts.hostname not in LOCAL_HOSTS: continue  # a link out (a paper) is not a request: not followed
                target = unquote(parts.path).lstrip("/") or "index.html"
                if target.endswith(".html"):
                    if target not in facts: broken.append(f"{name} -> {link} (no such page)")
                    # a browser looks for the fragment as written, then percent-decoded (nbconvert's heading ids are
                    # percent-encoded)
                    elif parts.fragment and not {parts.fragment, unquote(parts.fragment)} & set(facts[target]["ids"]):
                        broken.append(f"{name} -> {link} (no #{unquote(parts.fragment)} there)")
                elif not (site / target).is_file():
                    broken.append(f"{name} -> {link} (no such file)")
        assert not broken, "broken links:\n" + "\n".join(broken[:20])
        assert not failed, "local requests that failed:\n" + "\n".join(failed[:20])
        assert browser.outside == [], f"the site asked {len(browser.outside)} times for other hosts: {browser.outside[:10]}"
    finally:
        if browser: browser.close()
        server.shutdown()
        server.server_close()
    print(f"quick site: {len(facts)} pages, {sum(f['formulas'] for f in facts.values())} formulas, "
          f"{sum(len(f['links']) for f in facts.values())} links checked in {time.time() - start:.1f} s")
