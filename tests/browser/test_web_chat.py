"""The web chat page end to end: a real `candor serve` with the real default model, driven in Debian's
headless Chromium through Selenium and chromedriver."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from gguf_factory import write_tiny_llama
from live_server import start_server, stop_server
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

import candor
from candor.config import Settings
from candor.server.web import prefers_html

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m:Q4_K_M"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
# The tiny model's template opens <think> in the prompt, as DeepSeek-R1 distills do; the grammar makes its
# random weights close the thought and answer, so the page gets both `thinking` and `content`.
THINK_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}"
)
THINK_GRAMMAR = 'root ::= [a-z]{4,8} " " [a-z]{4,8} "</think>" [a-z]{4,8} " " [a-z]{4,8}'
LAST_REPLY = """
const all = document.querySelectorAll('#log .msg.assistant');
const a = all[all.length - 1];
if (!a) return null;
return {
  text: a.querySelector('.text').textContent,
  thinking: a.querySelector('.thinking-text').textContent,
  thinkingShown: !a.querySelector('.thinking').hidden,
  thinkingOpen: a.querySelector('.thinking').open,
  stats: a.querySelector('.stats').textContent,
  error: a.querySelector('.error').textContent,
  busy: a.getAttribute('aria-busy') === 'true',
  count: all.length,
};
"""
RECORD_LENGTHS = """
window.lengths = [];
new MutationObserver(() => {
  const all = document.querySelectorAll('#log .msg.assistant .text');
  if (all.length) window.lengths.push(all[all.length - 1].textContent.length);
}).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's CANDOR_HOME: the default model, a tiny thinking model and a tiny one to break later."""
    home = tmp_path_factory.mktemp("web-home")
    settings = Settings.from_env({"CANDOR_HOME": str(home)})
    thinker = write_tiny_llama(home / "thinker.gguf", name="Tiny Thinker", chat_template=THINK_TEMPLATE)
    candor.import_model(thinker, name="tiny-think", settings=settings)
    fragile = write_tiny_llama(home / "fragile.gguf", name="Tiny Fragile")
    candor.import_model(fragile, name="tiny-fragile", settings=settings)
    return home


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[str]:
    # a 4096-token context, so that a request asking for more must wait for the model to be idle
    proc, url = start_server(home, env={"CANDOR_CTX": "4096"})
    yield url
    stop_server(proc)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Debian's chromium, headless, at a desktop size; downloads go to a temporary folder."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})  # to catch script errors
    downloads = tmp_path_factory.mktemp("downloads")
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.downloads = downloads  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda _: check(), what)


def last_reply(driver: WebDriver) -> dict[str, Any] | None:
    reply: dict[str, Any] | None = driver.execute_script(LAST_REPLY)
    return reply


def finished(driver: WebDriver, timeout: float = 60) -> dict[str, Any]:
    """Wait until the last answer stops streaming; return it."""
    reply = wait_for(
        driver, lambda: (r := last_reply(driver)) and not r["busy"] and r, "the answer to finish", timeout
    )
    assert isinstance(reply, dict)
    return reply


def tokens_in(reply: dict[str, Any]) -> int:
    """The token count an answer's stats line shows."""
    found = re.search(r"(\d+) tokens\b", reply["stats"])
    assert found, reply
    return int(found.group(1))


def streaming(driver: WebDriver) -> None:
    """Return while the last answer streams text. The default model may end an answer by itself early (at
    one of its turn markers); then ask again (Regenerate), as a user wanting a long one would."""
    for _ in range(5):
        reply = wait_for(
            driver, lambda: (r := last_reply(driver)) and (r["text"] or not r["busy"]) and r, "streamed text"
        )
        if reply["busy"]:
            assert driver.find_element(By.ID, "stop").is_enabled()
            return
        driver.find_element(By.ID, "regenerate").click()
    raise AssertionError("five answers in a row ended before they could be stopped")


def stopped_by_escape(driver: WebDriver) -> dict[str, Any]:
    """Press Escape while the last answer streams (it stops, as the Stop button does) and return it."""
    for _ in range(5):
        streaming(driver)
        driver.find_element(By.ID, "prompt").send_keys(Keys.ESCAPE)
        reply = finished(driver, timeout=10)
        if "stopped by you" in reply["stats"]:
            return reply
        driver.find_element(By.ID, "regenerate").click()  # it ended between the look and the key
    raise AssertionError("five answers in a row ended before Escape")


def counter(server: str, name: str) -> float:
    """One of the server's Prometheus counters."""
    for line in httpx.get(server + "/metrics").text.splitlines():
        if line.startswith(f"candor_{name}_total "):
            return float(line.split()[1])
    raise AssertionError(f"no counter {name}")


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(url + "/ui")
    wait_for(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#model option"), "the model list")


def settings_box(driver: WebDriver) -> None:
    box = driver.find_element(By.ID, "settings-box")
    if not box.get_attribute("open"):
        box.find_element(By.TAG_NAME, "summary").click()


def set_settings(driver: WebDriver, **values: str) -> None:
    """Type into the settings form as a user does (every field not named is cleared)."""
    settings_box(driver)
    for name in ("system", "temperature", "top_p", "top_k", "num_predict", "seed", "extra"):
        field = driver.find_element(By.ID, name)
        field.clear()
        if values.get(name):
            field.send_keys(values[name])


def new_chat(driver: WebDriver, model: str) -> None:
    driver.find_element(By.ID, "new-chat").click()
    wait_for(driver, lambda: not driver.find_elements(By.CSS_SELECTOR, "#log .msg"), "an empty chat")
    Select(driver.find_element(By.ID, "model")).select_by_value(model)


def send(driver: WebDriver, text: str) -> None:
    box = driver.find_element(By.ID, "prompt")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def test_browsers_get_the_page_and_clients_still_get_ollamas_answer(server: str) -> None:
    for probe in (
        httpx.get(server + "/"),
        httpx.head(server + "/", headers={"accept": BROWSER_ACCEPT}),
        ollama.Client(host=server)._client.get("/"),  # the official client, its own headers
    ):
        assert probe.status_code == 200 and probe.headers["content-type"].startswith("text/plain")
    assert ollama.Client(host=server)._client.get("/").text == "Ollama is running"
    if shutil.which("curl"):
        curl = subprocess.run(["curl", "-s", server + "/"], capture_output=True, text=True, timeout=10)
        assert curl.stdout == "Ollama is running"
    redirected = httpx.get(server + "/", headers={"accept": BROWSER_ACCEPT})
    assert redirected.status_code == 303 and redirected.headers["location"] == "/ui"
    page = httpx.get(server + "/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert httpx.get(server + "/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(server + "/ui/__init__.py").status_code == 404


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER_ACCEPT, True),
        ("text/html", True),
        ("*/*", False),
        ("", False),
        ("application/json", False),
        ("text/plain, text/html;q=0.5", False),
        ("text/html;q=0", False),
    ],
)
def test_only_an_accept_that_prefers_html_is_a_browser(accept: str, html: bool) -> None:
    assert prefers_html(accept) is html


def test_chat_streams_stops_regenerates_and_survives_a_reload(server: str, browser: WebDriver) -> None:
    driver = browser
    driver.get(server + "/")  # a browser at the root lands on the page
    wait_for(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#model option"), "the model list")
    assert driver.current_url == server + "/ui"
    labels = {
        o.get_attribute("value"): o.text for o in driver.find_elements(By.CSS_SELECTOR, "#model option")
    }
    assert {MODEL, "tiny-think:latest"} <= set(labels)
    for fact in ("gemma3", "268M", "Q4_K_M", "253.1 MB"):  # identity read from the file, and its size
        assert fact in labels[MODEL]
    new_chat(driver, MODEL)
    assert "base model" in driver.find_element(By.ID, "model-info").text
    set_settings(driver, temperature="0.7", num_predict="16", seed="7")

    prompt = driver.find_element(By.ID, "prompt")
    prompt.send_keys("Why is the sky blue?")
    ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
    prompt.send_keys("Answer briefly.")
    assert prompt.get_attribute("value") == "Why is the sky blue?\nAnswer briefly."  # Shift+Enter: a newline
    assert not driver.find_elements(By.CSS_SELECTOR, "#log .msg")
    driver.execute_script(RECORD_LENGTHS)
    prompt.send_keys(Keys.ENTER)
    first = finished(driver)
    lengths = [n for n in driver.execute_script("return window.lengths") if n]
    assert len(set(lengths)) >= 2 and lengths == sorted(lengths), lengths  # streamed: the text grew
    assert first["text"] and not first["error"], first
    # The default model may end its answer before the limit (at one of its turn markers).
    count = tokens_in(first)
    assert 1 <= count <= 16 and ("token limit reached" not in first["stats"] or count == 16), first
    assert "tokens/s" in first["stats"] and "first token" in first["stats"]
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "web-chat.png"))

    set_settings(driver, num_predict="4000")
    send(driver, "Tell me a very long story about a dragon.")
    stopped = stopped_by_escape(driver)
    assert stopped["count"] == 2 and "first token" in stopped["stats"], stopped
    time.sleep(0.5)
    assert last_reply(driver) == stopped  # nothing arrives after the stop
    assert not driver.find_element(By.ID, "stop").is_enabled()
    wait_for(driver, lambda: counter(server, "requests_cancelled") >= 1, "the server to cancel it", 10)

    set_settings(driver, num_predict="6")
    driver.find_element(By.ID, "regenerate").click()
    again = finished(driver)
    assert again["count"] == 2 and 1 <= tokens_in(again) <= 6 and "stopped by you" not in again["stats"], (
        again
    )

    before = driver.find_element(By.ID, "log").text
    driver.refresh()
    wait_for(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#model option"), "the model list")
    titles = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "#chats button")]
    assert "Why is the sky blue?" in titles
    assert driver.find_element(By.ID, "log").text == before
    assert Select(driver.find_element(By.ID, "model")).first_selected_option.get_attribute("value") == MODEL
    assert driver.find_element(By.ID, "num_predict").get_attribute("value") == "6"

    driver.find_element(By.ID, "export").click()
    downloads: Path = driver.downloads  # type: ignore[attr-defined]
    exported = wait_for(driver, lambda: [p for p in downloads.glob("candor-chats-*.json")], "the export")
    chats = json.loads(exported[0].read_text())["chats"]
    mine = next(c for c in chats if c["title"] == "Why is the sky blue?")
    assert [m["role"] for m in mine["messages"]] == ["user", "assistant", "user", "assistant"]
    assert mine["messages"][0]["content"] == "Why is the sky blue?\nAnswer briefly."
    assert mine["model"] == MODEL and mine["messages"][1]["stats"]["eval_count"] == count

    assert driver.get_log("browser") == []  # no script error, no CSP violation, no failed request

    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 375, "height": 740, "deviceScaleFactor": 2, "mobile": True},
    )
    try:
        driver.refresh()
        wait_for(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#model option"), "the model list")
        assert (
            driver.execute_script("return document.documentElement.scrollWidth") <= 375
        )  # no sideways scroll
        for control in ("prompt", "send", "stop", "model", "new-chat"):
            box = driver.find_element(By.ID, control).rect
            assert box["x"] >= 0 and box["x"] + box["width"] <= 375 and box["y"] + box["height"] <= 740, (
                control
            )
        driver.save_screenshot(str(ARTIFACTS / "web-chat-375px.png"))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_thinking_is_shown_collapsed_apart_from_the_answer(server: str, browser: WebDriver) -> None:
    driver = browser
    open_page(driver, server)
    new_chat(driver, "tiny-think:latest")
    set_settings(driver, extra=json.dumps({"grammar": THINK_GRAMMAR}))
    send(driver, "hello")
    reply = finished(driver)
    assert not reply["error"], reply
    assert reply["thinkingShown"] and not reply["thinkingOpen"], reply
    assert len(reply["thinking"].split()) == 2 and len(reply["text"].split()) == 2, reply
    assert "think>" not in reply["thinking"] + reply["text"]
    thinking = driver.find_elements(By.CSS_SELECTOR, "#log .msg.assistant .thinking")[-1]
    assert not thinking.find_element(By.CLASS_NAME, "thinking-text").is_displayed()
    thinking.find_element(By.TAG_NAME, "summary").click()
    assert thinking.find_element(By.CLASS_NAME, "thinking-text").is_displayed()


def test_busy_server_and_a_model_that_fails_to_load_are_explained(
    server: str, home: Path, browser: WebDriver
) -> None:
    driver = browser
    open_page(driver, server)
    new_chat(driver, MODEL)
    set_settings(driver, num_predict="4", extra='{"num_ctx": 8192}')
    streaming = threading.Event()
    done = threading.Event()

    def hold_the_model() -> None:  # another client decoding with the 4096-token context
        # raw completion, past end-of-text: a chat answer could end before the browser asks
        body = {"model": MODEL, "prompt": "Count.", "max_tokens": 4000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", server + "/v1/completions", json=body, timeout=60) as response:
            for _ in response.iter_lines():
                streaming.set()
                if done.is_set():
                    return

    other = threading.Thread(target=hold_the_model, daemon=True)
    other.start()
    try:
        assert streaming.wait(30)
        send(driver, "Hi")
        busy = finished(driver)
    finally:
        done.set()
        other.join(30)
    assert "The server is busy" in busy["error"] and "4096-token context" in busy["error"], busy

    (home / "fragile.gguf").write_bytes((home / "fragile.gguf").read_bytes()[:-4096])  # broken after listing
    new_chat(driver, "tiny-fragile:latest")
    set_settings(driver)
    send(driver, "Hi")
    failed = finished(driver)
    assert "The model could not be run" in failed["error"] and "truncated" in failed["error"], failed
    assert driver.find_element(By.ID, "send").is_enabled()


def test_api_key_is_asked_for_kept_in_the_tab_and_a_dropped_connection_is_explained(
    tmp_path: Path, browser: WebDriver
) -> None:
    driver = browser
    proc, url = start_server(tmp_path, "--api-key", "s3cret")
    try:
        assert httpx.get(url + "/ui").status_code == 200 and httpx.get(url + "/ui/api.js").status_code == 200
        assert httpx.get(url + "/api/tags").status_code == 401
        driver.get(url + "/ui")
        dialog = driver.find_element(By.ID, "key-dialog")
        wait_for(driver, dialog.is_displayed, "the key prompt")
        assert driver.switch_to.active_element == driver.find_element(By.ID, "key")
        assert any("401" in entry["message"] for entry in driver.get_log("browser"))  # the log is read
        driver.find_element(By.ID, "key").send_keys("wrong", Keys.ENTER)
        wait_for(driver, lambda: "refused" in driver.find_element(By.ID, "key-reason").text, "a refusal")
        driver.find_element(By.ID, "key").send_keys("s3cret", Keys.ENTER)
        wait_for(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#model option"), "the model list")
        assert not dialog.is_displayed()
        assert driver.execute_script("return sessionStorage.getItem('candor.apiKey')") == "s3cret"
        assert "s3cret" not in driver.execute_script("return JSON.stringify(localStorage)")

        new_chat(driver, MODEL)
        set_settings(driver, num_predict="4000")
        send(driver, "Tell me a long story.")
        streaming(driver)
        proc.kill()  # the server goes away mid-answer
        dropped = finished(driver, timeout=15)
        assert "connection to the server dropped" in dropped["error"] and dropped["text"], dropped
    finally:
        stop_server(proc)
