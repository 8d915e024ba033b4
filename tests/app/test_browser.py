"""``instructedit app`` in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium against the served page.

Without the browser these tests skip, unless ``INSTRUCTEDIT_BROWSER_TESTS=required`` (set by
``.ci/run``, which installs it): then they fail. ``INSTRUCTEDIT_SCREENSHOTS=DIR`` keeps the
screenshot of the first edit as ``DIR/app.png`` (``make screenshots`` writes the docs' one).
"""

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _missing() -> str | None:
    try:
        import gradio  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as error:
        return f"{error.name} is not installed (pip install 'instructedit[app,test]')"
    if CHROMIUM is None or DRIVER is None:
        return "chromium or chromedriver is missing (apt install chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``instructedit app`` on a free port: (url, seconds from the command to the first answer)."""
    missing = _missing()
    if missing is not None:
        if os.environ.get("INSTRUCTEDIT_BROWSER_TESTS") == "required":
            pytest.fail(f"the browser tests are required here: {missing}")
        pytest.skip(missing)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    started = time.monotonic()
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "instructedit", "app", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"instructedit app exited ({process.returncode}):\n{log.read_text()}")
            if time.monotonic() - started > 60:
                pytest.fail(f"instructedit app did not answer in 60 s:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.25)
        yield url, started
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _open(browser, url):
    """Loads the page; returns the Instruction box once the page is usable."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    return WebDriverWait(browser, 30).until(
        lambda driver: driver.find_element(By.CSS_SELECTOR, "#instruction textarea")
    )


def _edit(browser, instruction, *, previous=None):
    """Types ``instruction``, presses Edit, and waits (120 s at most) for a new image under
    Edited; returns its URL."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = browser.find_element(By.CSS_SELECTOR, "#instruction textarea")
    box.clear()
    box.send_keys(instruction)
    browser.find_element(By.ID, "edit-button").click()

    def edited(driver):
        images = driver.find_elements(By.CSS_SELECTOR, "#edited img")
        source = images[0].get_attribute("src") if images else None
        return source if source and source != previous else False

    return WebDriverWait(browser, 120).until(edited)


def _verdict(browser, *, not_=None):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(driver):
        text = driver.find_element(By.ID, "verdict").text
        return text if text.startswith("Oracle") and text != not_ else False

    return WebDriverWait(browser, 30).until(shown)


def test_the_page_loads_within_30_s_of_the_command(server, browser):
    url, started = server
    _open(browser, url)
    assert time.monotonic() - started < 30


def test_an_instruction_typed_and_edited_shows_the_edit_under_edited(server, browser):
    url, _ = server
    _open(browser, url)
    started = time.monotonic()
    source = _edit(browser, "make the circle blue")
    assert time.monotonic() - started < 120
    with urllib.request.urlopen(source, timeout=10) as response:
        edited = Image.open(io.BytesIO(response.read()))
    assert edited.size == (256, 256)  # the 32×32 edit, shown enlarged
    # The preselected scene is a bundled one: the oracle judges the edit beside it.
    assert _verdict(browser).startswith("Oracle: success: edit realised, the rest intact")
    folder = os.environ.get("INSTRUCTEDIT_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(Path(folder) / "app.png"))


def test_two_edits_in_turns_keep_a_history_to_go_back_to(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    _open(browser, url)
    first = _edit(browser, "make the circle blue")
    verdict = _verdict(browser)
    browser.find_element(By.ID, "continue").click()  # "Edit the result"
    WebDriverWait(browser, 30).until(
        lambda driver: not driver.find_elements(By.CSS_SELECTOR, "#edited img")
    )
    _edit(browser, "make the background black", previous=first)
    # The second turn edits the first one's result, the scene the oracle knows it reached.
    assert "does not read" not in _verdict(browser, not_=verdict)

    def captions(driver):
        found = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#history .caption-label")]
        return found if len(found) == 3 else False

    assert WebDriverWait(browser, 30).until(captions) == [
        "input",
        "make the circle blue",
        "make the background black",
    ]


def test_an_empty_instruction_gets_a_message_not_a_traceback(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    _open(browser, url)
    browser.find_element(By.ID, "edit-button").click()
    message = "Instruction: type what to change"
    body = WebDriverWait(browser, 30).until(
        lambda driver: (
            (text := driver.find_element(By.TAG_NAME, "body").text) and message in text and text
        )
    )
    assert "Traceback" not in body
