"""The page at ``GET /`` in a real headless browser (the system's Chromium and chromedriver).

Skips, saying why, when Chromium, its driver or selenium are missing; with
``BREGNET_REQUIRE_BROWSER=1`` (set by ``.ci/run``) it fails instead, so CI really runs it.
The screenshot is kept as a test artefact in ``tests/artifacts/serve_page.png``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from infer_helpers import astronaut
from serve_helpers import encode, tiny_predictor

ARTIFACTS = Path(__file__).parent / "artifacts"
KEY = "browser-test-key"


def _need(what: str, found: object) -> None:
    if found:
        return
    if os.environ.get("BREGNET_REQUIRE_BROWSER") == "1":
        pytest.fail(f"BREGNET_REQUIRE_BROWSER=1 but {what} is missing")
    pytest.skip(f"{what} is missing (on Debian: apt-get install chromium chromium-driver)")


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    _need("Chromium (chromium)", browser)
    _need("its driver (chromedriver)", driver)
    try:
        import selenium  # noqa: F401
    except ImportError:
        _need("selenium (pip install selenium)", None)
    for mod in ("starlette", "uvicorn", "httpx"):
        try:
            __import__(mod)
        except ImportError:
            _need(f"{mod} (pip install 'bregnet[serve]')", None)
    return str(browser), str(driver)


def _fake_camera(path: Path) -> Path:
    """A Y4M clip for Chromium's fake camera: the astronaut, 640x480, a few frames."""
    import cv2
    import numpy as np

    face = cv2.resize(astronaut(), (480, 480), interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[:, 80:560] = face
    yuv = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes()
    with open(path, "wb") as fh:
        fh.write(b"YUV4MPEG2 W640 H480 F5:1 Ip A1:1 C420jpeg\n")
        for _ in range(5):
            fh.write(b"FRAME\n" + yuv)
    return path


@pytest.fixture()
def browser(tmp_path):
    binary, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1000",
                f"--user-data-dir={profile}",
                # a fake camera showing the astronaut, and camera access granted without a prompt
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={_fake_camera(tmp_path / 'camera.y4m')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_draws_boxes_with_labels(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from bregnet.serve import BackgroundServer, ServeSettings, create_app

    photo = tmp_path / "astronaut.png"
    photo.write_bytes(encode(astronaut()))
    predictor = tiny_predictor(tmp_path)
    app = create_app(predictor, ServeSettings(api_key=KEY))
    with BackgroundServer(app) as srv:
        browser.get(srv.url + "/")
        wait = WebDriverWait(browser, 60, poll_frequency=0.1)
        # the API needs a key: the page asks for it, then describes the model
        key_field = browser.find_element(By.ID, "key")
        wait.until(lambda d: key_field.is_displayed())
        key_field.send_keys(KEY)
        browser.execute_script("document.getElementById('key').dispatchEvent(new Event('change'))")
        wait.until(lambda d: "bregnext_custom" in d.find_element(By.ID, "model").text)

        browser.find_element(By.ID, "file").send_keys(str(photo))
        wait.until(lambda d: d.execute_script(
            "return document.getElementById('view').dataset.drawn") == "1")
        boxes = json.loads(browser.execute_script(
            "return document.getElementById('view').dataset.boxes"))
        assert len(boxes) == 1
        box = boxes[0]
        assert box["label"] in predictor.labels
        # the box is where the API put the face, in pixels of the photo (512 x 512)
        assert 150 < box["x"] < 210 and 40 < box["y"] < 100 and 70 < box["w"] < 120
        # ... and really drawn: the canvas pixel on its left edge has the box colour
        rgba = browser.execute_script(
            "const c = document.getElementById('view').getContext('2d');"
            "return Array.from(c.getImageData(arguments[0], arguments[1], 1, 1).data);",
            box["x"], box["y"] + box["h"] // 2)
        want = [int(box["colour"][i:i + 2], 16) for i in (1, 3, 5)]
        assert max(abs(a - b) for a, b in zip(rgba[:3], want)) <= 2, (rgba, box["colour"])
        # the label drawn above the box is a filled rectangle of the same colour
        rgba = browser.execute_script(
            "const c = document.getElementById('view').getContext('2d');"
            "return Array.from(c.getImageData(arguments[0], arguments[1], 1, 1).data);",
            box["x"] + 1, box["y"] - 3)
        assert max(abs(a - b) for a, b in zip(rgba[:3], want)) <= 2
        # the side panel: one face card with its label, a probability bar per class, the V/A dot
        cards = browser.find_elements(By.CSS_SELECTOR, "#faces .face")
        assert len(cards) == 1 and cards[0].get_attribute("data-label") == box["label"]
        assert box["label"] in cards[0].text
        assert len(cards[0].find_elements(By.CSS_SELECTOR, ".bar")) == len(predictor.labels)
        assert cards[0].find_elements(By.CSS_SELECTOR, "svg .va-dot")
        assert "1 face(s)" in browser.find_element(By.ID, "status").text
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "serve_page.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"
                  and "401" not in e.get("message", "")]
        assert severe == []


def test_webcam_mode_sends_frames_and_draws(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from bregnet.serve import BackgroundServer, ServeSettings, create_app

    predictor = tiny_predictor(tmp_path)
    with BackgroundServer(create_app(predictor, ServeSettings())) as srv:
        browser.get(srv.url + "/")
        wait = WebDriverWait(browser, 60, poll_frequency=0.1)
        wait.until(lambda d: "bregnext_custom" in d.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "mode-cam").click()
        wait.until(lambda d: d.execute_script(
            "return document.getElementById('view').dataset.drawn") == "1")
        boxes = json.loads(browser.execute_script(
            "return document.getElementById('view').dataset.boxes"))
        assert len(boxes) == 1 and boxes[0]["label"] in predictor.labels
        assert browser.execute_script("return document.getElementById('view').width") == 640
        # frames keep going to the server a few times a second
        import httpx

        def predictions() -> float:
            text = httpx.get(srv.url + "/metrics").text
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith('bregnet_requests_total{endpoint="/v1/predict"'))

        before = predictions()
        wait.until(lambda d: predictions() >= before + 2)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "serve_page_webcam.png"))
        browser.find_element(By.ID, "mode-photo").click()
