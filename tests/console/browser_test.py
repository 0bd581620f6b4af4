#!/usr/bin/env python3
"""The web console in a real browser: headless Chromium (Selenium) against a running broker.

Run by tests/console/browser.rs, which starts the broker with its console and passes the ports.
MQTT clients (paho) and a STOMP client (stomp.py) connect first; the script then checks what the
pages render from the JSON API, compares it with /api/overview and a /metrics scrape, clicks
Disconnect on one MQTT client as an admin and waits for that client to see its connection end,
checks that a read-only user gets no action buttons, and deletes offline sessions and purges
queues through their pages (client ids and queue names `.` and `..` among them: dot segments in a
URL path). Exits 1 at the first failed check.
"""

import argparse
import base64
import json
import os
import queue
import re
import sys
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt
import stomp
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 20  # seconds; the pages poll every 2 s
VICTIM = "console-victim"
KEEPER = "console-keeper"
# A client id that is markup: the page must show it as text.
MARKUP_ID = '<b id="injected">bold</b>'
QUEUE = "console.q"
OFFLINE = "console-offline"
# Names that are dot segments in a URL path.
DOT_NAMES = (".", "..")


def fail(message):
    print("FAIL: " + message, flush=True)
    sys.exit(1)


def check(ok, message):
    if not ok:
        fail(message)
    print("ok: " + message, flush=True)


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http_get(url, auth):
    request = urllib.request.Request(url, headers={"Authorization": auth})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def metric(text, name):
    """The sum of every sample of `name` in Prometheus text, over all its labels (per listener,
    per QoS, ...)."""
    samples = re.findall(r"^" + re.escape(name) + r"(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    if not samples:
        fail(f"no metric {name} in /metrics")
    return sum(float(value) for value in samples)


class MqttClient:
    """A paho client with its loop running; `ended` is set when its connection ends."""

    def __init__(self, port, client_id, protocol, clean_session=None):
        self.connected = threading.Event()
        self.ended = threading.Event()
        self.refused = None
        self.messages = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                                  clean_session=clean_session, reconnect_on_failure=False)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_a: self.ended.set()
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop_start()
        if not self.connected.wait(WAIT):
            fail(f"{client_id}: no CONNACK")

    def _on_connect(self, _client, _userdata, _flags, reason, _properties=None):
        if reason.is_failure:
            self.refused = str(reason)
        self.connected.set()

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


def chromium(profile):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1100,860", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # The explicit driver path keeps Selenium Manager from looking for (or downloading) one.
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def login(driver, auth):
    """Every request of the page (navigation and fetch) carries this Authorization header."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": auth}})


def d_text(driver, selector):
    return driver.find_element(By.CSS_SELECTOR, selector).text


def text_of(driver, element_id):
    return driver.find_element(By.ID, element_id).text


def wait_for(driver, condition, what):
    try:
        return WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        status = driver.find_element(By.ID, "status").text
        fail(f"{what} (page status: {status!r}, console: {driver.get_log('browser')})")


def number(text):
    """A table cell as a number; a dash (no figure yet) is -1."""
    try:
        return float(text)
    except ValueError:
        return -1.0


def css_string(value):
    """`value` as the inside of a double-quoted CSS string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def row(driver, client_id):
    return driver.find_elements(By.CSS_SELECTOR, f'#clients tr[data-client-id="{css_string(client_id)}"]')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--console", required=True, help="http://host:port")
    parser.add_argument("--mqtt", type=int, required=True)
    parser.add_argument("--stomp", type=int, required=True)
    parser.add_argument("--admin", required=True, help="user:password with the admin role")
    parser.add_argument("--reader", required=True, help="user:password with the user role only")
    parser.add_argument("--out", required=True, help="directory for screenshots and the profile")
    args = parser.parse_args()
    admin = basic(*args.admin.split(":", 1))
    reader = basic(*args.reader.split(":", 1))
    base = args.console.rstrip("/")

    victim = MqttClient(args.mqtt, VICTIM, mqtt.MQTTv311)
    keeper = MqttClient(args.mqtt, KEEPER, mqtt.MQTTv5)
    check(victim.refused is None and keeper.refused is None, "both MQTT clients connected")
    markup = MqttClient(args.mqtt, MARKUP_ID, mqtt.MQTTv311)
    markup_connected = markup.refused is None
    print(f"markup client id accepted by the broker: {markup_connected}", flush=True)
    stomp_conn = stomp.Connection12([("127.0.0.1", args.stomp)], heartbeats=(0, 0))
    stomp_conn.connect(wait=True, headers={"client-id": "console-stomp"})
    check(stomp_conn.is_connected(), "STOMP client connected")

    # Some traffic so that the message counters are not all zero.
    subscribed = threading.Event()
    keeper.client.on_subscribe = lambda *_a: subscribed.set()
    keeper.client.subscribe("console/t", qos=1)
    check(subscribed.wait(WAIT), "keeper subscribed")
    for i in range(5):
        victim.client.publish("console/t", f"m{i}", qos=1).wait_for_publish(WAIT)
    for _ in range(5):
        keeper.messages.get(timeout=WAIT)
    expected_connections = 4 if markup_connected else 3

    api = json.loads(http_get(base + "/api/overview", admin))
    check(api["connections"]["current"] == expected_connections,
          f"/api/overview counts {expected_connections} connections")

    driver = chromium(os.path.join(args.out, "profile"))
    try:
        login(driver, admin)
        driver.get(base + "/")
        wait_for(driver, lambda d: text_of(d, "connections-current") == str(expected_connections),
                 f"overview shows {expected_connections} connections")
        check(text_of(driver, "connections-stomp") == "1", "overview shows 1 STOMP connection")
        check(text_of(driver, "connections-mqtt") == str(expected_connections - 1), "overview shows the MQTT connections")
        check(text_of(driver, "broker-name") == api["broker_name"], f"overview shows broker {api['broker_name']}")
        check(text_of(driver, "version") == api["version"], "overview shows the version")
        listeners = driver.find_elements(By.CSS_SELECTOR, "#listeners tbody tr[data-listener]")
        check(len(listeners) == len(api["listeners"]) and len(listeners) >= 2, "overview lists the listeners")
        check("Signed in as admin" in text_of(driver, "user"), "overview names the admin user")
        reload = api["last_reload"]
        check(reload["result"] == "error" and reload["diagnostics"], "/api/overview has the failed reload")
        check(text_of(driver, "reload-result").startswith("failed"), "overview shows the failed reload")
        shown = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#reload-diagnostics li")]
        check(len(shown) == len(reload["diagnostics"]) and reload["diagnostics"][0]["message"] in shown[0],
              f"overview lists the reload's diagnostics ({shown[0] if shown else None!r})")

        # The page against a live scrape: connections now, and the messages received.
        scrape = http_get(base + "/metrics", admin)
        connections = metric(scrape, "ferromq_connections")
        check(int(connections) == int(text_of(driver, "connections-current")),
              f"overview connections = ferromq_connections ({int(connections)})")
        received = metric(scrape, "ferromq_messages_received_total")
        wait_for(driver, lambda d: text_of(d, "messages-received") == str(int(received)),
                 f"overview messages in = ferromq_messages_received_total ({int(received)})")
        print(f"ok: overview messages in = /metrics ({int(received)})", flush=True)

        # Traffic for the chart: its rate is a delta of messages.received between two polls.
        stop = threading.Event()

        def publish():
            n = 0
            while not stop.is_set():
                keeper.client.publish("console/t", f"t{n}", qos=0)
                n += 1
                time.sleep(0.02 + 0.03 * (n // 50 % 2))

        traffic = threading.Thread(target=publish, daemon=True)
        traffic.start()
        wait_for(driver, lambda d: int(d.find_element(By.ID, "rate-chart").get_attribute("data-points") or 0) >= 5
                 and float(text_of(d, "rate-in")) > 5, "the chart shows a rate of messages in")
        stop.set()
        traffic.join()
        check(re.fullmatch(r"\d+\.\d", text_of(driver, "rate-out")) is not None, "the chart's rates are shown")
        driver.save_screenshot(os.path.join(args.out, "console-overview.png"))

        driver.get(base + "/clients")
        wait_for(driver, lambda d: row(d, VICTIM) and row(d, KEEPER), "clients page lists both MQTT clients")
        stomp_rows = driver.find_elements(By.CSS_SELECTOR, '#clients tr[data-protocol="stomp"]')
        check(len(stomp_rows) == 1, "clients page lists the STOMP client")
        cells = row(driver, KEEPER)[0].find_elements(By.TAG_NAME, "td")
        check(cells[1].text == "MQTT 5.0", "clients page shows the keeper's protocol version")
        if markup_connected:
            markup_rows = row(driver, MARKUP_ID)
            check(len(markup_rows) == 1, "the markup client id is a row")
            check(markup_rows[0].find_elements(By.TAG_NAME, "td")[0].text == MARKUP_ID,
                  "the markup client id is shown as text")
            check(not driver.find_elements(By.ID, "injected"), "the markup client id made no element")
        driver.save_screenshot(os.path.join(args.out, "console-clients.png"))

        # Disconnect the victim with a real click, confirmed in the dialog.
        row(driver, VICTIM)[0].find_element(By.CSS_SELECTOR, 'button[data-action="disconnect"]').click()
        wait_for(driver, expected_conditions.alert_is_present(), "a confirmation dialog")
        driver.switch_to.alert.accept()
        check(victim.ended.wait(WAIT), "the victim's connection ended after the click")
        wait_for(driver, lambda d: not row(d, VICTIM), "the victim's row is gone")
        wait_for(driver, lambda d: text_of(d, "action-result").startswith("Done: Disconnect client"),
                 "the page says the action was done")
        check(not keeper.ended.is_set(), "the keeper is still connected")

        # A read-only user sees the table and no buttons.
        login(driver, reader)
        driver.get(base + "/clients")
        wait_for(driver, lambda d: row(d, KEEPER) and "read only" in text_of(d, "user"), "reader sees the clients")
        check(not driver.find_elements(By.CSS_SELECTOR, "#clients button"), "reader gets no action buttons")
        check(not keeper.ended.is_set(), "the keeper is still connected")

        # The other pages render their tables.
        login(driver, admin)
        for name in ("sessions", "topics", "queues"):
            driver.get(base + "/" + name)
            wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true",
                     f"{name} page loaded")
        # An offline session (MQTT 3.1.1, clean session 0) deleted through the sessions page.
        offline = MqttClient(args.mqtt, OFFLINE, mqtt.MQTTv311, clean_session=False)
        subscribed = threading.Event()
        offline.client.on_subscribe = lambda *_a: subscribed.set()
        offline.client.subscribe("console/t", qos=1)
        check(subscribed.wait(WAIT), "the offline client subscribed")
        offline.stop()
        driver.get(base + "/sessions")
        offline_row = f'#sessions tr[data-client-id="{OFFLINE}"][data-connected="false"]'
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, offline_row), "sessions page lists the offline session")
        check(d_text(driver, offline_row + " td:nth-child(2)") == "offline", "the session is shown offline")
        keeper_row = f'#sessions tr[data-client-id="{KEEPER}"][data-connected="true"]'
        check(driver.find_elements(By.CSS_SELECTOR, keeper_row), "sessions page lists the keeper online")
        check(not driver.find_elements(By.CSS_SELECTOR, keeper_row + " button"), "an online session has no Delete")
        driver.find_element(By.CSS_SELECTOR, offline_row + ' button[data-action="delete"]').click()
        wait_for(driver, expected_conditions.alert_is_present(), "a confirmation dialog")
        driver.switch_to.alert.accept()
        wait_for(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, f'#sessions tr[data-client-id="{OFFLINE}"]'),
                 "the deleted session's row is gone")
        sessions = json.loads(http_get(base + "/api/sessions", admin))["sessions"]
        check(all(s["client_id"] != OFFLINE for s in sessions), "the session is gone from /api/sessions")
        # Client ids that are dot segments in a URL path: the browser would remove them from a
        # /api/sessions/{id}/delete path, even written %2E.
        for dots in DOT_NAMES:
            dotted = MqttClient(args.mqtt, dots, mqtt.MQTTv311, clean_session=False)
            check(dotted.refused is None, f"client {dots!r} connected")
            dotted.stop()
        for dots in DOT_NAMES:
            dots_row = f'#sessions tr[data-client-id="{dots}"][data-connected="false"]'
            wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, dots_row + ' button[data-action="delete"]'),
                     f"sessions page lists the offline session {dots!r}")
            driver.find_element(By.CSS_SELECTOR, dots_row + ' button[data-action="delete"]').click()
            wait_for(driver, expected_conditions.alert_is_present(), "a confirmation dialog")
            driver.switch_to.alert.accept()
            wait_for(driver, lambda d: text_of(d, "action-result").startswith("Done: Delete the offline session of " + dots)
                     and not d.find_elements(By.CSS_SELECTOR, f'#sessions tr[data-client-id="{dots}"]'),
                     f"the session {dots!r} was deleted through the page (action: {text_of(driver, 'action-result')!r})")
            sessions = json.loads(http_get(base + "/api/sessions", admin))["sessions"]
            check(all(s["client_id"] != dots for s in sessions), f"the session {dots!r} is gone from /api/sessions")
        driver.get(base + "/topics")
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '#topics tr[data-topic="console/t"]'),
                 "topics page lists console/t")
        # The topic's rate: a delta of its messages_in between two polls, while a publisher runs.
        topic_cell = '#topics tr[data-topic="console/t"] td:nth-child({})'
        stop = threading.Event()
        traffic = threading.Thread(target=publish, daemon=True)
        traffic.start()
        wait_for(driver, lambda d: number(d_text(d, topic_cell.format(5))) > 5,
                 "topics page shows console/t's rate while it is published to")
        stop.set()
        traffic.join()
        check(number(d_text(driver, topic_cell.format(4))) > 0, "topics page shows console/t's messages in")
        driver.save_screenshot(os.path.join(args.out, "console-topics.png"))

        # Purge a queue through its page: three messages sent over STOMP, then none. The first
        # one creates the queue; the page then shows the rate of the next two.
        driver.get(base + "/queues")
        queue_row = f'#queues tr[data-queue="{QUEUE}"]'
        stomp_conn.send("/queue/console.q", "q0")
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, queue_row)
                 and d_text(d, queue_row + " td:nth-child(2)") == "1", "queues page lists the new queue")
        for i in range(1, 3):
            stomp_conn.send("/queue/console.q", f"q{i}")
        wait_for(driver, lambda d: number(d_text(d, queue_row + " td:nth-child(6)")) > 0,
                 "queues page shows the queue's enqueue rate")
        deadline = time.time() + WAIT
        while time.time() < deadline:
            queues = json.loads(http_get(base + "/api/queues", admin))["queues"]
            if any(q["name"] == QUEUE and q["depth"] == 3 for q in queues):
                break
            time.sleep(0.1)
        else:
            fail(f"/api/queues never showed {QUEUE} with depth 3")
        wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, queue_row + " td:nth-child(2)").text == "3",
                 "queues page shows the depth 3")
        driver.find_element(By.CSS_SELECTOR, queue_row + ' button[data-action="purge"]').click()
        wait_for(driver, expected_conditions.alert_is_present(), "a confirmation dialog")
        driver.switch_to.alert.accept()
        wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, queue_row + " td:nth-child(2)").text == "0",
                 "queues page shows the depth 0 after Purge")
        wait_for(driver, lambda d: text_of(d, "action-result").endswith("(3 messages purged)"),
                 f"the page says how many messages the purge removed (action: {text_of(driver, 'action-result')!r})")
        check(json.loads(http_get(base + "/api/queues", admin))["queues"][0]["depth"] == 0,
              "the queue is empty after Purge")
        # Queues whose names are dot segments in a URL path, purged through the page too.
        for dots in DOT_NAMES:
            stomp_conn.send("/queue/" + dots, "d")
            dots_row = f'#queues tr[data-queue="{dots}"]'
            wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, dots_row)
                     and d_text(d, dots_row + " td:nth-child(2)") == "1", f"queues page lists queue {dots!r} with 1 message")
            driver.find_element(By.CSS_SELECTOR, dots_row + ' button[data-action="purge"]').click()
            wait_for(driver, expected_conditions.alert_is_present(), "a confirmation dialog")
            driver.switch_to.alert.accept()
            wait_for(driver, lambda d: text_of(d, "action-result").startswith("Done: Purge every message of queue " + dots)
                     and d_text(d, dots_row + " td:nth-child(2)") == "0",
                     f"queue {dots!r} was purged through the page (action: {text_of(driver, 'action-result')!r})")
            depth = [q["depth"] for q in json.loads(http_get(base + "/api/queues", admin))["queues"] if q["name"] == dots]
            check(depth == [0], f"queue {dots!r} is empty after Purge")
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        check(not errors, f"no errors in the browser console {errors}")
    finally:
        driver.quit()
        for client in (keeper, markup, victim):
            client.stop()
        if stomp_conn.is_connected():
            stomp_conn.disconnect()
    print("browser test passed", flush=True)


if __name__ == "__main__":
    main()
