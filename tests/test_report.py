"""The HTML report of a saved gradient log (kerasbp.report, scripts/report.py).

The page is parsed (its sections, tables and embedded PNG figures, decoded), written by the real
script in a subprocess, and, where a Chromium is installed, opened in a headless browser and
screenshot.
"""

import base64
import html.parser
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerasbp import GradientLogger, cli, compile_model, report, xor_data, xor_model
from kerasbp.jobs import Diverged, run_linear, run_xor
from kerasbp.logger import load_gradient_log
from kerasbp.logger import log as log_module

ROOT = Path(__file__).resolve().parents[1]


class Page(html.parser.HTMLParser):
    """What a report page holds: headings, images, external references, and the visible text."""

    def __init__(self, text):
        super().__init__()
        self.headings, self.images, self.external, self.tags, self.text = [], [], [], set(), []
        self._heading = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag in ("h1", "h2", "h3"):
            self._heading = [tag, ""]
        if tag == "img":
            self.images.append(attrs)
        for key in ("src", "href"):
            if key in attrs and not attrs[key].startswith("data:"):
                self.external.append(attrs[key])

    def handle_endtag(self, tag):
        if self._heading and tag == self._heading[0]:
            self.headings.append(tuple(self._heading))
            self._heading = None

    def handle_data(self, data):
        if self._heading:
            self._heading[1] += data
        self.text.append(data)

    def pngs(self):
        """Every embedded image, decoded: list of `(alt, RGB array (height, width, 3))`."""
        out = []
        for img in self.images:
            prefix = "data:image/png;base64,"
            assert img["src"].startswith(prefix), img["src"][:40]
            data = base64.b64decode(img["src"][len(prefix) :], validate=True)
            with Image.open(io.BytesIO(data)) as im:
                assert im.format == "PNG"
                out.append((img.get("alt", ""), np.asarray(im.convert("RGB"))))
        return out


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """Saved logs: `xor` (60 Adam steps that learn) and `diverged` (linear, SGD at 5: NaN at some step)."""
    folder = tmp_path_factory.mktemp("logs")
    run_xor(epochs=60, log_gradients=folder / "xor.npz")
    with pytest.raises(Diverged) as info:
        run_linear(learning_rate=5, log_gradients=folder / "diverged.npz")
    return {"xor": folder / "xor.npz", "diverged": folder / "diverged.npz", "diverged_step": info.value.step}


def run_report(*args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


def test_script_writes_a_self_contained_page_of_a_xor_log(logs, tmp_path):
    log_path = tmp_path / "xor.npz"
    shutil.copy(logs["xor"], log_path)
    proc = run_report(log_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "xor.html"  # the default: the log's path with .html
    assert proc.stdout.strip() == f"wrote {out}" and proc.stderr == ""
    page = Page(out.read_text(encoding="utf-8"))
    assert page.external == [] and "script" not in page.tags and "link" not in page.tags  # nothing to fetch
    h2 = [text for tag, text in page.headings if tag == "h2"]
    assert h2 == ["Summary", "Health", "Loss", "Gradients per layer"]  # no applied-gradient or noise section in this log
    h3 = [text for tag, text in page.headings if tag == "h3"]
    assert h3 == ["vanishing: ok", "exploding: ok", "non-finite: ok", "dead relu units: not applicable"]
    text = " ".join(page.text)
    assert "60 (optimizer steps 0 to 59, every 1)" in text and "/dense_1/kernel" in text  # (Keras numbers the model's name)
    assert "writes them as inf" in text  # zero-initialised biases: the CSV export's inf update ratios
    pngs = page.pngs()
    assert [alt for alt, _ in pngs] == [
        "Vanishing: first-to-last kernel gradient ratio",
        "Exploding: the global gradient norm per step",
        "Loss per logged step",
        "Gradient L2 norm per variable",
        "Update ratio |Δw|/|w| per variable",
    ]
    for alt, rgb in pngs:
        assert rgb.shape == (340, 760, 3), alt
        assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50, alt  # drawn, not blank


def test_page_of_a_diverged_log_names_the_step_and_needs_no_tensorflow(logs, tmp_path):
    # The report reads a log with NumPy and matplotlib only: checked in a fresh interpreter.
    out = tmp_path / "diverged report.html"
    code = (
        "import sys; from kerasbp.cli import main_report; "
        f"status = main_report([{str(logs['diverged'])!r}, '--out', {str(out)!r}, '--title', 'lr 5']); "
        "print(status, sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "0 []"
    page = Page(out.read_text(encoding="utf-8"))
    assert ("h1", "Gradient log: lr 5") in page.headings
    h3 = [text for tag, text in page.headings if tag == "h3"]
    assert h3 == ["vanishing: not applicable", "exploding: FLAGGED", "non-finite: FLAGGED", "dead relu units: not applicable"]
    step = logs["diverged_step"]
    text = " ".join(page.text)
    assert f"first non-finite value at step {step}" in text
    assert f"(optimizer steps 0 to {step}, every 1)" in text  # the log ends at that step
    alts = [alt for alt, _ in page.pngs()]
    assert f"Non-finite: NaN/Inf gradient entries per variable, first at step {step}" in alts


class LogWithClipping(log_module.GradientLog):
    """A log whose applied-gradient norms differ from the loss gradient's (as after clipping)."""

    def stat(self, name):
        if name == report.APPLIED_STAT:
            return super().stat("norm") * 0.5
        return super().stat(name)


def test_the_applied_gradient_section_only_when_they_differ(logs):
    # (where they do not, as in the XOR log, the page ends with the gradients: see the first test)
    plain = load_gradient_log(logs["xor"])
    log = LogWithClipping()
    log.__dict__.update(plain.__dict__)
    log._chunks["clipped"] = [np.arange(len(log)) % 2 == 0]  # clipping acted: the applied norms differ
    log._cache.clear()
    page = Page(report.report_html(log))
    assert [t for tag, t in page.headings if tag == "h2"][-1] == "Applied vs loss gradients"
    assert [alt for alt, _ in page.pngs()][-1] == "Applied vs loss gradient norms"


def test_a_per_example_log_gets_the_gradient_noise_section(tmp_path):
    X, y = xor_data()
    model = compile_model(xor_model(seed=0), "sgd", learning_rate=0.5)
    logger = GradientLogger(per_example=True)
    model.fit(X, y, epochs=5, batch_size=4, callbacks=[logger], verbose=0)
    logger.to_npz(tmp_path / "noise.npz")
    page = Page(report.report_html(load_gradient_log(tmp_path / "noise.npz")))
    assert [t for tag, t in page.headings if tag == "h2"][-1] == "Gradient noise"
    assert [alt for alt, _ in page.pngs()][-1] == "Gradient noise statistics"


def test_bad_input_exits_2_naming_the_argument(logs, tmp_path, capsys):
    (tmp_path / "table.csv").write_text("step,loss\n0,1\n")
    cases = [
        ([str(tmp_path / "missing.npz")], "error: LOG must be an existing .npz gradient log. Received: LOG="),
        ([str(tmp_path / "table.csv")], "error: LOG must be a .npz gradient log written by to_npz"),
        ([str(logs["xor"]), "--out", str(tmp_path / "no" / "r.html")], "error: --out must be a file path in an existing folder"),
        ([str(tmp_path)], "error: LOG is a folder without a kerasbp gradient log"),
    ]
    for argv, message in cases:
        assert cli.main_report(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith(message), err
    with pytest.raises(ValueError, match="`out` must be given"):
        report.write_report(load_gradient_log(logs["xor"]))
    with pytest.raises(ValueError, match="no logged step"):
        report.report_html(log_module.GradientLog())


@pytest.mark.parametrize(
    "path, expected",
    [("run/xor.npz", "run/xor.html"), ("run/XOR.NPZ", "run/XOR.html"), ("run/stream", "run/stream.html"), ("run/stream/", "run/stream.html")],
)
def test_default_report_path(path, expected):
    assert report.default_report_path(path) == expected


def test_check_log_path(tmp_path):
    assert report.check_log_path("p", tmp_path / "a.CSV") == str(tmp_path / "a.CSV")
    with pytest.raises(ValueError, match=r"`p` must end in \.npz \(the whole log.*\) or \.csv \(the statistics table"):
        report.check_log_path("p", tmp_path / "a.json")
    with pytest.raises(ValueError, match="existing folder"):
        report.check_log_path("p", tmp_path / "no" / "a.npz")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
def test_page_renders_in_headless_chromium(logs, tmp_path):
    page = report.write_report(logs["diverged"], out=tmp_path / "report.html", title="diverged")
    shot = tmp_path / "shot.png"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        Path(page).resolve().as_uri(),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1200, 2000)
        rgb = np.asarray(im.convert("RGB")).astype(int)
    # the page was laid out and its images decoded: dark text at the top, plot colours further down
    assert (rgb[:120].sum(axis=2) < 150).sum() > 500  # the title
    blue = (np.abs(rgb - [31, 119, 180]).sum(axis=2) < 40).sum()  # matplotlib's first line colour
    red = (np.abs(rgb - [198, 40, 40]).sum(axis=2) < 40).sum()  # "FLAGGED"
    assert blue > 200 and red > 20, (blue, red)
    keep = os.environ.get("KERASBP_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
