"""The web page: `render` on its own, then app.py driven in headless Chromium.

The browser test needs Debian's chromium and chromium-driver (`.ci/run`
installs them) and the selenium package; where one is missing it is skipped,
saying which."""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.request

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gan import batching, images, webapp
from gan.digit_writer import DigitWriter
from tests.test_cli import ROOT, SHARED_CACHE

# Left out of the quick loop (`pytest -m "not slow"`): serves the page and drives a browser.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def writer():
    return DigitWriter.load()


def test_render_draws_the_writers_number_and_saves_the_png(writer, tmp_path):
    picture, path, status, fit = webapp.render(writer, "2026", 8, 0, False,
                                               str(tmp_path))
    want = np.asarray(images.number_image(writer.number("2026", 8, 0).images, webapp.SCALE))
    assert fit is None
    np.testing.assert_array_equal(picture, want)
    with Image.open(path) as png:
        assert png.format == "PNG"
        np.testing.assert_array_equal(np.asarray(png), want)
    assert "2026" in status and "8 handwritings" in status


@pytest.mark.parametrize("text,styles,seed,words", [
    ("20a6", 8, 0, "only digits 0-9 and spaces"), ("1" * 1000, 8, 0, "at most 64"),
    ("", 8, 0, "at least one digit"), ("2026", 8, -1, "seed"), ("2026", 8, 0.5, "seed"),
    ("2026", 8, None, "seed"), ("2026", 0, 0, "handwritings must be a whole number"),
    # What the widgets never send, but any client of the page's API can:
    ("2026", 8, "abc", "seed must be"), ("2026", 8, float("nan"), "seed must be"),
    ("2026", 8, float("inf"), "seed must be"), ("2026", "8", 0, "handwritings must"),
    ("2026", None, 0, "handwritings must"), ("2026", [8], 0, "handwritings must"),
    ("2026", 17, 0, "between 1 and 16"), (None, 8, 0, "the number must be text"),
    (2026, 8, 0, "the number must be text"),
])
def test_render_answers_bad_input_with_a_message(writer, tmp_path, text, styles, seed,
                                                 words):
    picture, path, status, _ = webapp.render(writer, text, styles, seed, False,
                                          str(tmp_path))
    assert picture is None and path is None and words in status
    assert "Traceback" not in status and "`" not in status
    assert os.listdir(tmp_path) == []


def _seven(size=300) -> Image.Image:
    """A seven drawn as with a mouse: black strokes on white."""
    im = Image.new("L", (size, size), 255)
    ImageDraw.Draw(im).line([(60, 60), (240, 60), (120, 260)], fill=0, width=22)
    return im


def test_render_writes_in_the_handwriting_of_a_drawn_digit(writer, tmp_path):
    picture, path, status, fit = webapp.render(writer, "2026", 8, 3, False,
                                               str(tmp_path), _seven(), "7")
    style = writer.style_from(_seven(), 7, 3)
    want = images.number_image(writer.number("2026", 1, 3, style=style).images,
                               webapp.SCALE)
    np.testing.assert_array_equal(picture, np.asarray(want))   # one line, in it
    np.testing.assert_array_equal(fit, np.asarray(images.number_image(
        np.stack([[style.source, style.fit]]), 2 * webapp.SCALE)))
    assert "in your handwriting (a 7)" in status and os.path.exists(path)


@pytest.mark.parametrize("picture,label,words", [
    (Image.new("L", (50, 50), 255), webapp.READ_IT, "the picture is blank"),
    (_seven(), "12", "the digit drawn is one of"),
    (_seven(), None, "the digit drawn is one of"),
    (np.zeros((2, 2, 2, 2)), webapp.READ_IT, "2-D picture"),
])
def test_render_answers_a_bad_drawing_with_a_message(writer, tmp_path, picture, label,
                                                     words):
    out, path, status, fit = webapp.render(writer, "12", 1, 0, False, str(tmp_path),
                                           picture, label)
    assert out is None and path is None and fit is None and words in status
    assert os.listdir(tmp_path) == []


def test_an_untouched_sketchpad_is_no_drawing_and_an_upload_comes_first():
    blank = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    drawn = blank.copy()
    ImageDraw.Draw(drawn).line([(50, 50), (200, 200)], fill=(0, 0, 0, 255), width=18)
    upload = _seven()
    assert webapp.drawn_digit({"composite": blank}, None) is None
    assert webapp.drawn_digit(None, None) is None
    assert webapp.drawn_digit({"composite": drawn}, None) is drawn
    assert webapp.drawn_digit({"composite": drawn}, upload) is upload


def test_the_pages_files_stay_bounded(writer, tmp_path):
    """Each request saves its download; the folder keeps the newest
    KEPT_FILES (the rest are removed, and app.py removes the folder at exit)."""
    for seed in range(webapp.KEPT_FILES + 5):
        webapp.render(writer, "7", 1, seed, False, str(tmp_path))
    names = sorted(os.listdir(tmp_path))
    assert len(names) == webapp.KEPT_FILES
    assert "number_7_seed36.png" in names and "number_7_seed0.png" not in names


def test_request_shapes_compile_a_handful_of_programs(writer, monkeypatch):
    """Every digits x handwritings count compiled its own program (about 20 MB
    each, hundreds reachable): batches are padded to gan.batching.SIZES, so
    counts 1 to 64 and 1,000 make at most len(SIZES) programs."""
    from gan import sampling
    sampling.generate.clear_cache()
    for count in [*range(1, 65), 1000]:
        writer.draw(np.zeros((count, 100), np.float32), np.zeros(count, np.int32))
    assert sampling.generate._cache_size() <= len(batching.SIZES)


# ---------------------------------------------------------------------------
# In a real browser
# ---------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """app.py on a free port, with a temp folder of its own (TMPDIR) to show
    what it leaves behind; its output in server.log."""
    tmp = tmp_path_factory.mktemp("web")
    (tmp / "tmp").mkdir()
    port = _free_port()
    env = dict(os.environ, GAN_COMPILE_CACHE=SHARED_CACHE, JAX_PLATFORMS="cpu",
               TMPDIR=str(tmp / "tmp"))
    with open(tmp / "server.log", "w") as log:
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "app.py"),
                                 "--port", str(port)], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            assert proc.poll() is None, (tmp / "server.log").read_text()
            time.sleep(0.5)
    try:
        yield types.SimpleNamespace(url=url, proc=proc, tmp=tmp / "tmp",
                                    log=tmp / "server.log")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser_and_page(server):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y "
                    "chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="needs the selenium package")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--window-size=1300,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        driver.get(server.url)
        yield driver
    finally:
        driver.quit()


def _ask(driver, text: str, expected: str) -> str:
    """Types `text` as the number, presses Write, and returns the status line
    once it holds `expected` (a timeout fails the test).

    The status changes more than once per request (Gradio shows a timer while
    it works), so the wait is for the answer itself, not for any change."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = WebDriverWait(driver, 60).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#number textarea, #number input"))
    box.clear()
    box.send_keys(text)
    driver.find_element(By.CSS_SELECTOR, "#write").click()
    return WebDriverWait(driver, 60).until(
        lambda d: (s := d.find_element(By.CSS_SELECTOR, "#status").text)
        and expected in s and s)


def _picture(driver) -> np.ndarray:
    from selenium.webdriver.common.by import By
    src = driver.find_element(By.CSS_SELECTOR, "#picture img").get_attribute("src")
    if src.startswith("data:"):
        raw = base64.b64decode(src.split(",", 1)[1])
    else:
        with urllib.request.urlopen(src, timeout=30) as response:
            raw = response.read()
    with Image.open(io.BytesIO(raw)) as im:
        return np.asarray(im.convert("L"))


def test_the_page_writes_the_number_typed_pixel_for_pixel(browser_and_page, writer):
    driver = browser_and_page
    status = _ask(driver, "1995", "8 handwritings")
    assert "1995" in status and "⚠" not in status
    want = images.number_image(writer.number("1995", 8, 0).images, webapp.SCALE)
    np.testing.assert_array_equal(_picture(driver), np.asarray(want))


@pytest.mark.parametrize("text,words", [("12ab", "only digits 0-9 and spaces"),
                                        ("7" * 1000, "at most 64")])
def test_the_page_shows_a_message_for_bad_input(browser_and_page, text, words):
    status = _ask(browser_and_page, text, words)
    assert "⚠" in status and "Traceback" not in browser_and_page.page_source


def test_render_refuses_a_verify_that_is_not_true_or_false(writer, tmp_path):
    """The string "false" (a client of the page's API) turned verification on."""
    picture, path, status, _ = webapp.render(writer, "2026", 8, 0, "false",
                                             str(tmp_path))
    assert picture is None and path is None
    assert "verify must be True or False, got 'false'" in status
    assert os.listdir(tmp_path) == []


def test_the_page_writes_in_the_handwriting_drawn_on_its_sketchpad(browser_and_page):
    """Strokes drawn with the mouse (a 7) set the handwriting: one line, the
    drawing as the generator sees it beside its redrawing."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver = browser_and_page
    WebDriverWait(driver, 60).until(lambda d: d.find_element(
        By.CSS_SELECTOR, "#sketch button[aria-label='Brush']")).click()
    canvas = driver.find_elements(By.CSS_SELECTOR, "#sketch canvas")[-1]
    ActionChains(driver).move_to_element_with_offset(canvas, -60, -80).click_and_hold() \
        .move_by_offset(110, 0).move_by_offset(-60, 170).release().perform()
    status = _ask(driver, "1995", "1995 in your handwriting")
    assert "(a 7)" in status                     # read by the classifier
    number = _picture(driver)
    assert number.shape[0] == (28 + 2 * images.LINE_GAP) * webapp.SCALE  # one line
    src = driver.find_element(By.CSS_SELECTOR, "#fit img").get_attribute("src")
    assert src


def test_the_page_writes_in_the_handwriting_of_an_uploaded_picture(
        browser_and_page, writer, tmp_path):
    """An uploaded PNG (which comes before a drawing) gives the same picture as
    the Python API for that picture and seed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver = browser_and_page
    _seven().save(tmp_path / "seven.png")
    WebDriverWait(driver, 60).until(lambda d: d.find_element(
        By.CSS_SELECTOR, "#upload input[type=file]")).send_keys(
        str(tmp_path / "seven.png"))
    status = _ask(driver, "2026", "2026 in your handwriting")
    assert "(a 7)" in status
    with Image.open(tmp_path / "seven.png") as png:
        style = writer.style_from(png, None, 0)
    want = images.number_image(writer.number("2026", 1, 0, style=style).images,
                               webapp.SCALE)
    np.testing.assert_array_equal(_picture(driver), np.asarray(want))


def test_uploads_over_the_size_limit_are_refused(server):
    """Gradio's upload route took a file of any size (30 MB seen); now at most
    webapp.MAX_UPLOAD (10 MB)."""
    import httpx
    big = httpx.post(server.url + "gradio_api/upload",
                     files={"files": ("big.png", b"\0" * (11 * 2**20))}, timeout=60)
    small = httpx.post(server.url + "gradio_api/upload",
                       files={"files": ("small.png", b"\0" * 1000)}, timeout=60)
    assert big.status_code == 413 and "maximum allowed size" in big.text
    assert small.status_code == 200


def test_the_server_leaves_no_files_when_stopped(server):
    """Last in this file: SIGTERM ends the server as Ctrl-C does, and its
    downloads and Gradio's copies (all under its temp folder) go with it."""
    assert os.listdir(server.tmp)                     # its folder, while it runs
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    assert os.listdir(server.tmp) == []
    assert "Traceback" not in server.log.read_text()
