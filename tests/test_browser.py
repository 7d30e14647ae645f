"""The dashboard as a person sees it: its pages rendered by a real browser (headless Chromium), not only its API.

VisualDL's HParams table is drawn by JavaScript; a bug there (dotted names rendered as blank cells) passes every API
test. So the scalar and HParams pages are rendered after a virtual-time budget and the DOM is read back. CI installs
Chromium (`.ci/run`) and sets ``PADDLE_LENET_BROWSER_REQUIRED=1``, which turns a missing browser into a failure.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import signal
import subprocess

import pytest

from .conftest import mnist_args, start_dashboard, tool

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
if BROWSER is None and os.environ.get("PADDLE_LENET_BROWSER_REQUIRED"):
    raise RuntimeError("PADDLE_LENET_BROWSER_REQUIRED is set but no chromium is installed (apt-get install chromium)")
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no headless Chromium here (apt-get install chromium); CI has one")


def _render(url: str, profile: str, lang: str) -> str:
    """The page's visible text after its scripts ran: tags become '|', entities are decoded."""
    p = subprocess.Popen([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--lang={lang}",
                          f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom", url],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:  # generous: on a loaded 2-core machine the browser's start alone can take a minute
        out, err = p.communicate(timeout=400)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # the browser's helper processes too
    assert p.returncode == 0, err[-2000:]
    text = re.sub(r"<(style|script)\b.*?</\1>", "", out, flags=re.S)
    return html.unescape(re.sub(r"\|+", "|", re.sub(r"<[^>]+>", "|", text)))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> str:
    """Two models with different learning rates, 1 short epoch each on MNIST5k."""
    out = str(tmp_path_factory.mktemp("browser"))
    for cfg, name, lr in (("configs/lenet.yml", "pool", "0.002"), ("configs/lenet_nopool.yml", "stride", "0.0005")):
        tool("train", *mnist_args(out, name, cfg, 1), "-o", "Data.train_limit=256", "-o",
             f"Optimizer.learning_rate={lr}", check=True)
    return out


def test_scalar_and_hparams_pages_render_every_run_in_a_browser(two_runs, tmp_path) -> None:
    proc, base = start_dashboard(two_runs)
    try:
        # a German browser: plain `visualdl` answers it with HTTP 500
        scalar = _render(base + "/scalar", str(tmp_path / "p1"), "de-DE")
        hp = _render(base + "/hyper-parameter", str(tmp_path / "p2"), "en-US")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for page in (scalar, hp):
        assert "VisualDL" in page and not re.search(r"Not Found|Internal Server Error|\b500\b", page), page[:1500]
    # the scalar page lists both runs by name and data set, and the metric groups
    assert "|pool·M5k|" in scalar and "|stride·M5k|" in scalar, scalar[:2000]
    assert "|eval|" in scalar and "|train|" in scalar
    # the HParams table: a row per run holding its model and learning rate, under names the table can show
    tokens = hp.split("|")
    first = tokens.index("Trial ID")
    header = tokens[first + 1:next(i for i, t in enumerate(tokens) if t.endswith("/vdl"))]
    rows = {t.split("/")[-2]: tokens[i + 1:i + 1 + len(header)] for i, t in enumerate(tokens) if t.endswith("/vdl")}
    assert set(rows) == {"pool", "stride"} and "lr" in header and "model" in header, hp[:3000]
    for run, model, lr in (("pool", "LeNet", 0.002), ("stride", "LeNet_nopool", 0.0005)):
        row = dict(zip(header, rows[run], strict=True))
        assert row["model"] == model and float(row["lr"]) == lr, row
        assert "undefined" not in rows[run] and "NaN" not in rows[run], row
