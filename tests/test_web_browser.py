"""The web pages in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium):
the revisions table and its links, a drawn chart, a revision's files and card, a hostile card that runs
nothing, and a private repo that an anonymous browser cannot see.

Set HUBCKPT_WEB_SCREENSHOTS=/some/dir to keep a screenshot of each page visited.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.parse

import pytest
from huggingface_hub import HfApi

from hubckpt.server import LocalHubServer

from . import environment as test_env
from .test_web import EVAL_LOSS, HOSTILE_CARD, publish_run

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

NAVIGATING = (NoSuchElementException, StaleElementReferenceException)  # the page is being replaced

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
        reason="needs Debian's chromium and chromium-driver (make test installs them)",
    ),
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,900",
]


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="hubckpt-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def visit(driver, url: str, shot: str | None = None) -> None:
    driver.get(url)
    folder = test_env.web_screenshots()
    if folder and shot:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(height, 4000))
        driver.save_screenshot(str(folder / f"{shot}.png"))
        driver.set_window_size(1280, 900)


@pytest.fixture(scope="module")
def run(local_hub, tmp_path_factory):
    repo_id = "alice/browser-run"
    states = publish_run(local_hub.url, repo_id, tmp_path_factory.mktemp("browser") / "spool")
    index = json.loads(open(HfApi(endpoint=local_hub.url).hf_hub_download(repo_id, "revisions.json"), "rb").read())
    return repo_id, states, index


def test_revisions_table_metrics_links_and_charts(browser, local_hub, run):
    repo_id, states, index = run
    visit(browser, f"{local_hub.url}/{repo_id}", "model")
    assert browser.title.startswith(repo_id)
    rows = browser.find_elements(By.CSS_SELECTOR, "#revisions-table tbody tr")
    assert [r.get_attribute("data-revision") for r in rows] == list(states)
    for row, entry in zip(rows, index["revisions"]):
        for metric, value in entry["metrics"].items():
            cell = row.find_element(By.CSS_SELECTOR, f'td[data-metric="{metric}"]')
            assert cell.text == f"{value:.4g}" and cell.is_displayed()
    assert [e["metrics"]["eval_loss"] for e in index["revisions"]] == EVAL_LOSS
    # The charts are drawn: one per metric, each line spanning the plot, best and final marked.
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert sorted(c.get_attribute("data-metric") for c in charts) == ["accuracy", "eval_loss", "loss"]
    for chart in charts:
        box = browser.execute_script(
            "const b = arguments[0].querySelector('polyline').getBBox();return [b.width, b.height];", chart
        )
        assert box[0] > 200 and box[1] > 20 and chart.size["width"] > 300
        assert chart.find_element(By.CSS_SELECTOR, ".mark-best").get_attribute("data-revision") == index["best"]
        assert chart.find_element(By.CSS_SELECTOR, ".mark-final").get_attribute("data-revision") == index["final"]
    # Every revision's link opens its page.
    hrefs = [
        a.get_attribute("href")
        for a in browser.find_elements(By.CSS_SELECTOR, "#revisions-table tbody td:first-child a")
    ]
    assert len(hrefs) == len(states)
    for name, href in zip(states, hrefs):
        visit(browser, href)
        assert browser.find_element(By.CSS_SELECTOR, ".refbar strong").text == name
        assert "model.safetensors" in browser.find_element(By.ID, "files-table").text
    # Clicking through, as a person would: the first revision's link, then "next".
    visit(browser, f"{local_hub.url}/{repo_id}")
    browser.find_element(By.LINK_TEXT, "step-0000010").click()
    browser.find_element(By.CSS_SELECTOR, "a[rel=next]").click()
    assert urllib.parse.unquote(browser.current_url).endswith("/tree/step-0000020")


def test_revision_page_lists_files_and_card(browser, local_hub, run):
    repo_id, states, _ = run
    visit(browser, f"{local_hub.url}/{repo_id}/tree/step-0000030", "revision")
    files = browser.find_element(By.ID, "files-table").text
    assert all(name in files for name in ("README.md", "checkpoint.json", "model.safetensors"))
    card = browser.find_element(By.CSS_SELECTOR, "article.card")
    assert "step-0000030" in card.find_element(By.TAG_NAME, "h1").text and card.is_displayed()
    tensors = browser.find_element(By.CSS_SELECTOR, "table.tensors").text
    assert all(name in tensors for name in states["step-0000030"] if not name.startswith("lm_head"))
    browser.find_element(By.LINK_TEXT, "diff vs previous").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "#compare-table tbody tr")
    assert rows and all(r.get_attribute("data-status") == "changed" for r in rows)
    if test_env.web_screenshots():
        visit(browser, browser.current_url, "compare")
        visit(browser, f"{local_hub.url}/{repo_id}/commits/main", "commits")
        visit(browser, f"{local_hub.url}/", "home")


def _pwned(driver) -> object:
    try:
        driver.switch_to.alert.dismiss()
        return "alert"
    except NoAlertPresentException:
        pass
    return driver.execute_script("return window.__pwned === undefined ? null : window.__pwned")


def test_hostile_card_runs_nothing(browser, local_hub, api):
    # The detector works: the same card as a plain page (no sanitiser, no CSP) does run.
    browser.get("data:text/html;charset=utf-8," + urllib.parse.quote(HOSTILE_CARD))
    assert _pwned(browser) is not None
    repo_id = "alice/browser-hostile"
    api.create_repo(repo_id, exist_ok=True)
    api.upload_file(path_or_fileobj=HOSTILE_CARD.encode(), path_in_repo="README.md", repo_id=repo_id)
    for path in (f"/{repo_id}", f"/{repo_id}/tree/main"):
        visit(browser, local_hub.url + path, "hostile")
        assert _pwned(browser) is None and browser.title != "PWNED"
        card = browser.find_element(By.CSS_SELECTOR, "article.card")
        assert "Hostile card" in card.text and "markdown" in card.find_element(By.TAG_NAME, "strong").text
        found = browser.execute_script(
            "const c = document.querySelector('article.card'); const bad = [];"
            "for (const el of c.querySelectorAll('*')) for (const a of el.attributes)"
            "  if (a.name.startsWith('on') || /javascript:/i.test(a.value)) bad.push(el.tagName + ' ' + a.name);"
            "return [bad, document.scripts.length];",
        )
        assert found == [[], 0]
        for i in range(len(card.find_elements(By.TAG_NAME, "a"))):
            link = browser.find_elements(By.CSS_SELECTOR, "article.card a")[i]
            if link.is_displayed():
                link.click()
                assert _pwned(browser) is None
                visit(browser, local_hub.url + path)
        for el in browser.find_elements(By.CSS_SELECTOR, "article.card div, article.card img"):
            if el.is_displayed():
                el.click()
        assert _pwned(browser) is None


@pytest.fixture(scope="module")
def token_hub(tmp_path_factory):
    with LocalHubServer(tmp_path_factory.mktemp("browser-token-hub")) as hub:
        hub.ctx.store.add_account("alice", "user")
        token = hub.ctx.store.create_token("alice", "write", "ci")[1]
        spool = tmp_path_factory.mktemp("browser-private") / "spool"
        publish_run(hub.url, "alice/private-run", spool, token=token, private=True)
        HfApi(endpoint=hub.url, token=token).create_repo("alice/public-run")
        yield hub, token


def test_private_repo_is_invisible_to_an_anonymous_browser(browser, token_hub):
    hub, token = token_hub
    browser.delete_all_cookies()
    visit(browser, f"{hub.url}/", "anonymous-home")
    listing = browser.find_element(By.TAG_NAME, "main").text
    assert "alice/public-run" in listing and "private-run" not in listing
    for path in ("/alice/private-run", "/alice/private-run/tree/main", "/alice/private-run/tree/step-0000010"):
        visit(browser, hub.url + path)
        page = browser.find_element(By.TAG_NAME, "main").text
        assert "Repository not found" in page and "model.safetensors" not in page and "eval_loss" not in page
    # Log in through the form; the page then shows the repo; the cookie is out of reach of scripts.
    browser.find_element(By.LINK_TEXT, "log in").click()
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    # click() returns once the form is sent, not when the redirected page has loaded: wait for it.
    WebDriverWait(browser, 15, ignored_exceptions=NAVIGATING).until(
        lambda d: (
            urllib.parse.unquote(d.current_url).endswith("/alice/private-run/tree/step-0000010")
            and d.find_elements(By.CSS_SELECTOR, ".refbar strong")
        )
    )
    assert browser.find_element(By.CSS_SELECTOR, ".refbar strong").text == "step-0000010"
    cookie = browser.get_cookie("hubckpt_token")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert "hubckpt_token" not in browser.execute_script("return document.cookie")
    visit(browser, f"{hub.url}/", "logged-in-home")
    assert "alice/private-run" in browser.find_element(By.TAG_NAME, "main").text
    browser.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
    WebDriverWait(browser, 15, ignored_exceptions=NAVIGATING).until(
        lambda d: (
            d.get_cookie("hubckpt_token") is None
            and d.find_elements(By.TAG_NAME, "main")
            and "private-run" not in d.find_element(By.TAG_NAME, "main").text
        )
    )
