"""The web page: `render` on its own, then app.py driven in headless Chromium.

The browser test needs Debian's chromium and chromium-driver (`.ci/run`
installs them) and the selenium package; where one is missing it is skipped,
saying which."""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from gan import images, webapp
from gan.digit_writer import DigitWriter
from tests.test_cli import ROOT, SHARED_CACHE

# Left out of the quick loop (`pytest -m "not slow"`): serves the page and drives a browser.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def writer():
    return DigitWriter.load()


def test_render_draws_the_writers_number_and_saves_the_png(writer, tmp_path):
    picture, path, status = webapp.render(writer, "2026", 8, 0, False, str(tmp_path))
    want = np.asarray(images.number_image(writer.number("2026", 8, 0).images, webapp.SCALE))
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
    picture, path, status = webapp.render(writer, text, styles, seed, False,
                                          str(tmp_path))
    assert picture is None and path is None and words in status
    assert "Traceback" not in status and "`" not in status
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------
# In a real browser
# ---------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser_and_page():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y "
                    "chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="needs the selenium package")
    port = _free_port()
    env = dict(os.environ, GAN_COMPILE_CACHE=SHARED_CACHE, JAX_PLATFORMS="cpu")
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "app.py"), "--port",
                               str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            assert server.poll() is None, server.stdout.read()
            time.sleep(0.5)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--window-size=1300,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        driver.get(url)
        yield driver
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)


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
    picture, path, status = webapp.render(writer, "2026", 8, 0, "false", str(tmp_path))
    assert picture is None and path is None
    assert "verify must be True or False, got 'false'" in status
    assert os.listdir(tmp_path) == []
