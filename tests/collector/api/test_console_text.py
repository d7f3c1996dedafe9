"""Hostile text beyond C0 in the real console (headless Chromium, the collector and Mosquitto
of test_console.py): a bidirectional override, an isolate, the line separator, a C1 control
and zero-width characters in a panel's description are shown as escapes in the list and the
detail, never applied (a U+202E would otherwise show a location backwards)."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec

from tests.collector.conftest import wait_until

from .conftest import OPERATOR
from .test_api_collector import StreamReader
from .test_console import Stack, alarm_rows, browser, sign_in, stack, wait  # noqa: F401

SPOOF = "3F \u202e東走廊\u202c \u2067x\u2069 a\u2028b \x9b1m z\u200bw\u200dj\ufeff"
HIDDEN = ("\u202e", "\u202c", "\u2067", "\u2069", "\u2028", "\x9b", "\u200b", "\u200d",
          "\ufeff")


def test_bidi_c1_and_zero_width_characters_are_shown_not_applied(
        browser: WebDriver, stack: Stack) -> None:  # noqa: F811
    sign_in(browser, stack.url, OPERATOR)
    stack.publish_fire(description=SPOOF)
    row = wait(browser).until(lambda d: alarm_rows(d)[0] if alarm_rows(d) else False)
    alarm_id = row.get_attribute("data-id")
    cell: str = browser.execute_script(  # the DOM's text, not selenium's rendering of it
        "return document.querySelector('#alarms tr[data-id]').textContent;")
    for ch in HIDDEN:
        assert ch not in cell, f"U+{ord(ch):04X} reached the page raw"
    for shown in ("\\u202e", "\\u202c", "\\u2067", "\\u2069", "\\u2028", "\\x9b", "\\u200b",
                  "\\u200d", "\\ufeff"):
        assert shown in cell, (shown, cell)
    assert "東走廊" in cell  # the text itself is kept, in its own order
    browser.find_element(By.CSS_SELECTOR, f'#alarms tr[data-id="{alarm_id}"]').click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "detail")))
    title: str = browser.execute_script(
        "return document.getElementById('detail-title').textContent;")
    assert "\u202e" not in title and "\\u202e" in title
    # The API still keeps the exact text (JSON escapes nothing away).
    api = stack.collector.alarms.get(alarm_id or "")
    assert api is not None and api.description == SPOOF


def test_a_console_whose_stream_is_replaced_says_so_and_stops_reconnecting(
        browser: WebDriver, stack: Stack) -> None:  # noqa: F811
    """The same user opens the per-user cap's worth of newer streams (other consoles): the
    console's stream, the oldest, is closed with ``event: replaced``; the console shows it
    and does not take the stream back (which would replace the newest, for ever)."""
    sign_in(browser, stack.url, OPERATOR)
    assert stack.collector.api is not None
    broadcaster = stack.collector.api.broadcaster
    wait_until(lambda: broadcaster.streams_of("duty-officer") == 1, "the console's stream")
    others = [StreamReader(stack.url, OPERATOR) for _ in range(broadcaster.max_per_user)]
    try:
        wait(browser).until(lambda d: d.find_element(By.ID, "conn").get_attribute(
            "data-state") == "replaced")
        assert broadcaster.replaced == 1
        assert "别处" in browser.find_element(By.ID, "conn").text
    finally:
        for o in others:
            o.close()
