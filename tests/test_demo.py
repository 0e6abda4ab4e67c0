"""The web demo (etchat.serve.demo) end to end: a real server driven by headless Chromium through selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``) and the Python
packages ``gradio`` and ``selenium``; the browser test is skipped with the reason when one is missing.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

# The clip of the chat tests: 10 s, frame k at k / VIDEO_FPS s, its colour encoding k.
from tests.test_chat import NUM_FRAMES, VIDEO_FPS, build_chat_checkpoint, mmss
from tests.video_utils import decode_frame_index, write_test_video

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
SERVER_START_TIMEOUT = 180
WAIT = 120


def find_browser() -> tuple[str | None, str | None]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    # Debian keeps chromedriver in /usr/bin, which a minimal PATH may lack.
    driver = shutil.which("chromedriver") or shutil.which("chromedriver", path="/usr/bin:/usr/lib/chromium")
    return chromium, driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_command(*args) -> list[str]:
    return [sys.executable, "-m", "etchat.serve.demo", *map(str, args)]


def test_demo_refuses_a_folder_that_is_not_a_checkpoint(tmp_path):
    result = subprocess.run(
        demo_command("--model_path", tmp_path / "missing"), cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    expected = f"etchat.serve.demo: error: {tmp_path / 'missing'}: no such checkpoint folder"
    assert result.stderr.strip().splitlines() == [expected]


def ended_pid() -> int:
    """The id of a process that has ended."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def wait_for_server(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        if server.poll() is not None:
            pytest.fail(f"the demo exited with code {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the demo did not answer within {SERVER_START_TIMEOUT} s:\n{log.read_text()}")
        time.sleep(0.5)


def test_the_real_launch_takes_the_upload_limit_and_sigterm_removes_the_uploads(tiny_checkpoint, tmp_path):
    """The demo as users start it (no part faked): --max_upload_mb reaches Gradio's server, the scratch folders of
    demos that ended are removed at start, and SIGTERM removes this one's."""
    pytest.importorskip("gradio", reason="the demo needs gradio")
    import signal

    temp = tmp_path / "tmp"
    stale = temp / f"etchat_demo_{ended_pid()}_abc" / "uploads"
    stale.mkdir(parents=True)
    (stale / "old.mp4").write_bytes(b"video")
    port = free_port()
    log = tmp_path / "demo.log"
    env = {**os.environ, "TMPDIR": str(temp), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = demo_command("--model_path", tiny_checkpoint, "--port", port, "--max_upload_mb", "20.5")
    with open(log, "w") as log_file:
        server = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_server(server, url, log)
        with urllib.request.urlopen(url + "config", timeout=10) as response:
            config = json.loads(response.read())
        assert config["max_file_size"] == int(20.5 * 1024 * 1024)
        assert not stale.parent.exists()  # the scratch of a demo that ended
        (scratch,) = temp.glob(f"etchat_demo_{server.pid}_*")
        (scratch / "uploads").mkdir(parents=True, exist_ok=True)
        (scratch / "uploads" / "clip.mp4").write_bytes(b"an upload")
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        assert not scratch.exists(), log.read_text()
    finally:
        if server.poll() is None:
            server.kill()


def test_an_impossible_upload_limit_is_one_line(tiny_checkpoint, capsys):
    from etchat.serve import demo

    assert demo.main(["--model_path", tiny_checkpoint, "--max_upload_mb", "0"]) == 2
    expected = "etchat.serve.demo: error: --max_upload_mb must be positive, got 0.0"
    assert capsys.readouterr().err.splitlines() == [expected]


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo_video") / "clip.mp4"
    write_test_video(path, NUM_FRAMES, VIDEO_FPS)
    return str(path)


@pytest.fixture(scope="module")
def demo_url(tiny_base, video_path, tmp_path_factory):
    """A running demo server on a tiny checkpoint; stopped after the module."""
    checkpoint = build_chat_checkpoint(tiny_base, str(tmp_path_factory.mktemp("demo_etchat")), video_path)
    port = free_port()
    log = tmp_path_factory.mktemp("demo_log") / "demo.log"
    with open(log, "w") as log_file:
        command = demo_command("--model_path", checkpoint, "--greedy", "--max_new_tokens", 40, "--port", port)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        server = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_server(server, url, log)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture
def browser():
    chromium, driver_path = find_browser()
    if chromium is None or driver_path is None:
        pytest.skip("needs chromium and chromedriver (apt-get install -y chromium chromium-driver)")
    pytest.importorskip("gradio", reason="the demo needs gradio")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="etchat_chromium_") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            yield driver
        finally:
            driver.quit()


# Records every state of the last turn of the answer, to see the streamed (unfinished) versions go by.
RECORD_STATES_JS = """
window.etchatStates = [];
const answer = document.querySelector('#etchat-answer');
new MutationObserver(() => {
    const turn = answer.querySelector('.etchat-turn:last-child');
    if (turn) window.etchatStates.push([turn.dataset.state, turn.querySelector('.etchat-a').textContent]);
}).observe(answer, {subtree: true, childList: true, characterData: true});
"""
# Resolves with [currentTime, [r, g, b] at the centre of the shown frame] once the player has seeked.
SEEK_AND_READ_JS = """
const [link, done] = arguments;
const video = document.querySelector('#etchat-video video');
video.addEventListener('seeked', () => {
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    const context = canvas.getContext('2d');
    context.drawImage(video, 0, 0);
    const pixel = context.getImageData(canvas.width / 2, canvas.height / 2, 1, 1).data;
    done([video.currentTime, [pixel[0], pixel[1], pixel[2]]]);
}, {once: true});
link.click();
"""


def test_demo_answers_streams_plots_and_seeks(browser, demo_url, video_path):
    import numpy as np
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT)
    browser.get(demo_url)
    ask = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#etchat-ask"))

    # Asking before uploading a video is an error message, not a crash.
    browser.find_element(By.CSS_SELECTOR, "#etchat-question textarea").send_keys("When?")
    ask.click()
    wait.until(lambda d: "upload a video first" in d.find_element(By.TAG_NAME, "body").text)

    browser.find_element(By.CSS_SELECTOR, "#etchat-video input[type=file]").send_keys(video_path)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#etchat-video video"))
    question = browser.find_element(By.CSS_SELECTOR, "#etchat-question textarea")
    question.clear()
    question.send_keys("When does the red circle appear?")
    browser.execute_script(RECORD_STATES_JS)
    ask.click()

    done = "#etchat-answer .etchat-turn[data-state=done]"
    turn = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, done))
    assert "When does the red circle appear?" in turn.find_element(By.CSS_SELECTOR, ".etchat-q").text
    states = browser.execute_script("return window.etchatStates")
    streamed = [text for state, text in states if state == "streaming" and len(text.strip()) > len("A: …")]
    assert streamed, f"no partial answer was shown: {states}"

    links = turn.find_elements(By.CSS_SELECTOR, ".etchat-time")
    assert links, "the answer has no time links (the test checkpoint is biased to write <vid>)"
    times = [float(link.get_attribute("data-time")) for link in links]
    assert [link.get_attribute("textContent") for link in links] == [mmss(t) for t in times]
    assert all(t in [float(i) for i in range(10)] for t in times)  # frames sampled at 1 fps: whole seconds

    plot = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#etchat-plot img"))
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", plot))
    assert plot.get_property("naturalWidth") >= 800

    # Each link seeks the player; the frame then shown is the video frame at that time (its colour says which).
    browser.set_script_timeout(WAIT)
    distinct = {seconds: link for link, seconds in zip(links, times)}
    for seconds, link in list(distinct.items())[:2]:
        current, pixel = browser.execute_async_script(SEEK_AND_READ_JS, link)
        assert current == pytest.approx(seconds, abs=1e-3)
        assert decode_frame_index(np.array([[pixel]], dtype=np.uint8)) == round(seconds * VIDEO_FPS)

    # A follow-up question joins the conversation; "New conversation" clears it.
    question.send_keys("And then?")
    ask.click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, done)) == 2)
    questions = [q.get_attribute("textContent") for q in browser.find_elements(By.CSS_SELECTOR, ".etchat-q")]
    assert questions == ["Q: When does the red circle appear?", "Q: And then?"]
    browser.find_element(By.CSS_SELECTOR, "#etchat-clear").click()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#etchat-answer .etchat-turn"))
