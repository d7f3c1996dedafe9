"""The web console in a real headless browser (Debian's chromium + chromedriver, selenium 4)
against a real collector and Mosquitto: sign in with a token, a fire alarm published to the
broker appears without a reload, a click acknowledges it (and the API then shows it
acknowledged by that user), hostile text stays text, Chinese first and English on a click.

One browser for the module (start-up is the slow part); each test signs in afresh."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from collector.app import Collector
from protocols.wire import (
    Bus,
    Event,
    EventType,
    GatewayState,
    Source,
    Status,
    encode_batches,
    encode_status,
)
from tests.collector.conftest import WAIT, config_data, wait_until, write_config
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port

from .conftest import OPERATOR, USERS, VIEWER

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
NOW = 1_718_000_000_000
HOSTILE = '<img src=x onerror="document.title=\'pwned\'">三层东走廊感烟探测器\x1b[31m'
SHOTS = Path(os.environ.get("FIREGATE_CONSOLE_SHOTS", "")) if \
    os.environ.get("FIREGATE_CONSOLE_SHOTS") else None
"""Set to a directory to keep screenshots of the console (for a person to look at)."""


@dataclass
class Stack:
    collector: Collector
    url: str
    gateway: mqtt.Client
    seq: int = 0

    def publish_fire(self, site: str = "hz-0042", description: str = HOSTILE,
                     source: str = "panel/1-1/42-0x00000102") -> None:
        self.seq += 1
        smoke = Source(source, Bus.GB26875, description=description)
        event = Event(source=smoke, type=EventType.FIRE_ALARM, receive_ms=NOW + self.seq,
                      seq=self.seq)
        self.gateway.publish("firegate/v1/hz-gw-1/records",
                             encode_batches("hz-gw-1", site, NOW, [event], epoch=1)[0],
                             qos=1).wait_for_publish(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1440,900", "--lang=zh-CN"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def stack(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Stack]:
    users: list[dict[str, Any]] = [{"name": u.name, "token": u.token, "role": u.role,
                                    "sites": list(u.sites)} for u in USERS]
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto, http={"listen": f"127.0.0.1:{free_port()}"},
        user=users))
    c = Collector(cfg).start()
    gw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hz-gw-1", protocol=mqtt.MQTTv5)
    gw.connect("127.0.0.1", mosquitto.port)
    gw.loop_start()
    try:
        wait_until(c.ingest.subscribed.is_set, "the collector's subscriptions")
        gw.publish("firegate/v1/hz-gw-1/status", encode_status(
            Status("hz-gw-1", GatewayState.ONLINE, NOW, site="hz-0042")),
            qos=1).wait_for_publish(10)
        assert c.api is not None
        yield Stack(c, c.api.url, gw)
    finally:
        gw.disconnect()
        gw.loop_stop()
        c.close()


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    """A condition, polled; the list is drawn again on every change, so an element found a
    moment ago may be gone (stale): poll again."""
    return WebDriverWait(driver, WAIT, ignored_exceptions=[StaleElementReferenceException])


def sign_in(driver: WebDriver, url: str, token: str) -> None:
    driver.get(url + "/")
    driver.execute_script("sessionStorage.clear(); localStorage.clear();")
    driver.get(url + "/")
    field = wait(driver).until(ec.visibility_of_element_located((By.ID, "login-token")))
    field.send_keys(token)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver).until(ec.visibility_of_element_located((By.ID, "main")))
    wait(driver).until(lambda d: d.find_element(By.ID, "conn").get_attribute("data-state")
                       == "live")


def alarm_rows(driver: WebDriver) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, "#alarms tbody tr[data-id]")


def first_row(driver: WebDriver) -> tuple[str, str] | bool:
    """The first alarm row's id and text, read together (False while there is none)."""
    rows = alarm_rows(driver)
    if not rows:
        return False
    return rows[0].get_attribute("data-id") or "", rows[0].text


def shot(driver: WebDriver, name: str) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / f"{name}.png"))


def test_a_fire_alarm_appears_live_and_a_click_acknowledges_it(browser: WebDriver,
                                                               stack: Stack) -> None:
    sign_in(browser, stack.url, OPERATOR)
    assert alarm_rows(browser) == []
    assert browser.find_element(By.ID, "who").text.startswith("duty-officer")
    marker = browser.execute_script("return window.__noReload = 'still here';")
    assert marker == "still here"

    stack.publish_fire()
    # Read inside the wait: the list is drawn again on every change (a site change too), so a
    # row found a moment ago may be stale by the time its text is read.
    found = wait(browser).until(first_row)
    assert isinstance(found, tuple)
    alarm_id, row_text = found
    assert browser.execute_script("return window.__noReload") == "still here"  # no reload
    assert "火警" in row_text and "hz-0042" in row_text
    # Hostile text shown as text: no element made from it, the script never ran, and the
    # ESC character is shown as a visible symbol.
    assert '<img src=x onerror="document.title=' in row_text
    assert "\u241b[31m" in row_text
    assert browser.find_elements(By.CSS_SELECTOR, "#alarms img") == []
    assert browser.title.startswith("(1) 火警")  # an unacknowledged fire alarm shows there
    site_text = wait(browser).until(lambda d: d.find_element(
        By.CSS_SELECTOR, '#sites li[data-site="hz-0042"][data-colour="red"]').text)
    assert "1" in site_text
    shot(browser, "1-alarm")

    # The list is drawn again on every change: find the row afresh to click it.
    def open_detail(d: WebDriver) -> bool:
        d.find_element(By.CSS_SELECTOR, f'#alarms tr[data-id="{alarm_id}"]').click()
        return True

    wait(browser).until(open_detail)
    wait(browser).until(ec.visibility_of_element_located((By.ID, "detail")))
    assert browser.find_element(By.ID, "detail").get_attribute("data-id") == alarm_id
    wait(browser).until(lambda d: "报警" in d.find_element(By.ID, "timeline").text)
    browser.find_element(By.ID, "ack-note").send_keys("值班员已到场 <b>bold</b>")
    shot(browser, "2-detail")
    browser.find_element(By.ID, "ack-btn").click()
    wait(browser).until(lambda d: "duty-officer" in d.find_element(
        By.CSS_SELECTOR, f'#alarms tr[data-id="{alarm_id}"] .ack-cell').text)
    wait(browser).until(lambda d: "已确认" in d.find_element(By.ID, "timeline").text)
    assert not browser.title.startswith("(")
    shot(browser, "3-acknowledged")

    api = httpx.get(f"{stack.url}/api/v1/alarms/{alarm_id}",
                    headers={"Authorization": f"Bearer {VIEWER}"}).json()
    assert api["acknowledged"] is True and api["acknowledged_by"] == "duty-officer"
    assert api["note"] == "值班员已到场 <b>bold</b>"
    assert [t["what"] for t in api["timeline"]][:2] == ["raised", "acknowledged"]

    # Resolve from the console: the alarm leaves the open list once it is closed.
    browser.find_element(By.CSS_SELECTOR, '#verdict option[value="false"]').click()
    browser.find_element(By.ID, "resolve-btn").click()
    wait(browser).until(lambda d: "误报" in d.find_element(By.ID, "detail-fields").text)
    api = httpx.get(f"{stack.url}/api/v1/alarms/{alarm_id}",
                    headers={"Authorization": f"Bearer {VIEWER}"}).json()
    assert api["resolution"] == "false" and api["resolved_by"] == "duty-officer"


def test_viewer_has_no_buttons_and_english_is_a_click_away(browser: WebDriver,
                                                           stack: Stack) -> None:
    stack.publish_fire(description="5F 仓库 感烟")
    sign_in(browser, stack.url, VIEWER)
    wait(browser).until(alarm_rows)
    alarm_id = alarm_rows(browser)[0].get_attribute("data-id")
    browser.find_element(By.CSS_SELECTOR, f'#alarms tr[data-id="{alarm_id}"]').click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "detail")))
    assert not browser.find_element(By.ID, "ack-btn").is_displayed()
    assert not browser.find_element(By.ID, "resolve-btn").is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, "h2 [data-i18n=open_alarms]").text == "未处理报警"
    browser.find_element(By.ID, "lang").click()
    wait(browser).until(lambda d: d.find_element(
        By.CSS_SELECTOR, "h2 [data-i18n=open_alarms]").text == "Open alarms")
    assert "FIRE" in alarm_rows(browser)[0].text
    shot(browser, "4-english")
    browser.find_element(By.ID, "lang").click()  # back to Chinese for the next test
    # A link to the alarm (<console>/#alarm=<id>) opens its detail.
    browser.find_element(By.ID, "detail-close").click()
    wait(browser).until(ec.invisibility_of_element_located((By.ID, "detail")))
    browser.get(f"{stack.url}/#alarm={alarm_id}")
    wait(browser).until(lambda d: d.find_element(By.ID, "detail").is_displayed() and
                        d.find_element(By.ID, "detail").get_attribute("data-id") == alarm_id)


def test_a_wrong_token_is_refused_and_sign_out_forgets_it(browser: WebDriver,
                                                          stack: Stack) -> None:
    browser.get(stack.url + "/")
    browser.execute_script("sessionStorage.clear();")
    browser.get(stack.url + "/")
    field = wait(browser).until(ec.visibility_of_element_located((By.ID, "login-token")))
    field.send_keys("x" * 40)
    browser.find_element(By.ID, "login-submit").click()
    wait(browser).until(lambda d: d.find_element(By.ID, "login-error").text != "")
    assert not browser.find_element(By.ID, "main").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('firegate.token')") is None
    sign_in(browser, stack.url, OPERATOR)
    assert browser.execute_script("return sessionStorage.getItem('firegate.token')") == OPERATOR
    browser.find_element(By.ID, "logout").click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "login-token")))
    assert browser.execute_script("return sessionStorage.getItem('firegate.token')") is None
    # The page keeps no error from its own scripts (CSP violations would show here).
    logs = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"
            and "Content Security Policy" in e.get("message", "")]
    assert logs == []


def test_signing_in_loads_every_open_alarm_page_by_page(browser: WebDriver,
                                                       stack: Stack) -> None:
    """More open alarms than one answer holds (500 by default) all reach the list, and so
    does a cleared fire alarm nobody acknowledged (open, no longer active); a resolved one
    still in alarm (active, closed) does not."""
    from collector.alarms.book import Signal

    book = stack.collector.alarms
    book.apply([Signal("raise", "hz-gw-1", "hz-0042", f"panel/1-1/{i}-0x00000102",
                       "fire_alarm", "fire", f"smoke {i}", stamp=(7, i + 1))
                for i in range(523)])
    book.apply([Signal("clear", "hz-gw-1", "hz-0042", "panel/1-1/0-0x00000102", "fire_alarm",
                       stamp=(7, 5000))])
    done = next(a for a in book.list(limit=2000) if a.source == "panel/1-1/1-0x00000102")
    book.resolve(done.id, verdict="test", by="op", note=None, origin="cli")
    want = {a.id for a in book.list(state="open", limit=5000)}
    assert len(want) == 522 and any(a.state == "cleared" for a in book.list(state="open"))
    sign_in(browser, stack.url, OPERATOR)

    def shown(driver: WebDriver) -> set[str]:  # one call, not one per row
        ids: list[str] = driver.execute_script(
            "return Array.from(document.querySelectorAll('#alarms tbody tr[data-id]'), "
            "(r) => r.dataset.id);")
        return set(ids)

    wait(browser).until(lambda d: shown(d) == want)
    assert len(shown(browser)) == 522
