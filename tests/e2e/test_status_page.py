"""Issue 20: the status page on the admin port (`/`), loaded in headless Chromium (Debian's
package, driven through chromium-driver) during a run: it shows each sink's state and
rows, why `/ready` is what it is, and refreshes itself when a sink goes down and comes
back, without a reload. Screenshots are kept in target/test-artifacts/."""
import json
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, create_topic, ingest_produce, unique, wait_until
from support.tcp_proxy import TcpProxy, config_through

EVENTS_SCHEMA = ROOT / "schemas/examples/events.yaml"
ARTIFACTS = ROOT / "target/test-artifacts"


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,600"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def row_of(driver, sink):
    """The row of `sink`, read in one script run: the page swaps its table every 2 s, so
    elements found one call earlier may be gone (a stale element) by the next."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#facts tbody tr')].map(tr => [...tr.cells].map(td => td.innerText))")
    for cells in rows:
        if cells[1] == sink:
            return dict(zip(["route", "sink", "state", "behind", "oldest", "complete_to", "rows", "last_write",
                                 "retries", "error"],
                            cells))
    return None


def ready_text(driver):
    return driver.execute_script("return document.getElementById('ready').innerText")


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="chromium and chromium-driver are installed by `make stack`")
def test_the_status_page_shows_a_sink_going_down_and_back_live(setup):
    count = 4000
    topic = create_topic(unique("status"), 2)
    route = {"name": "events", "topics": [topic], "schema": str(EVENTS_SCHEMA),
             "clickhouse": {"table": "events", "order_by": ["event_id"]},
             "iceberg": {"table": "events"},
             "batch": {"max_rows": 2000, "max_age": "300ms"}}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proxy = TcpProxy.to_url(setup.clickhouse.url).start()
    driver = None
    try:
        ingest = setup.start(config_through(setup, proxy, [route]))
        ingest.wait_ready()
        ingest_produce(topic, EVENTS_SCHEMA, count, "event_id")
        wait_until("every row written", lambda: (ingest.metric("ingest_rows_written_total") == 2 * count, None),
                   timeout=120)
        ch, ice = f"clickhouse {setup.database}.events", f"iceberg {setup.namespace}.events"
        driver = browser()
        driver.get(f"http://127.0.0.1:{ingest.port}/")
        assert driver.title == "ingest status"

        def shows_written():
            rows = [row_of(driver, sink) for sink in (ch, ice)]
            ok = all(r and r["state"] == "up" and r["rows"] == str(count) and r["behind"] == "0"
                     and r["last_write"].endswith("ago") and r["error"] == "" for r in rows)
            # Every record written: both sinks complete to the same (newest) time.
            marks = {r["complete_to"] for r in rows if r}
            ok = ok and len(marks) == 1 and marks.pop().startswith("20")
            route_line = driver.find_element("css selector", "p.route-watermark").text
            return ok and ready_text(driver) == "ready" and route_line.startswith("route events is complete"), rows

        wait_until("the page shows both sinks up with every row", shows_written, timeout=30)
        driver.save_screenshot(str(ARTIFACTS / "status-page-ready.png"))

        # ClickHouse refuses: the same page, not reloaded, turns to it within seconds.
        proxy.refuse()
        ingest_produce(topic, EVENTS_SCHEMA, 500, "event_id", start_id=count)

        def shows_down():
            row = row_of(driver, ch)
            ready = ready_text(driver)
            return (row["state"] == "failing" and row["error"] != "" and int(row["retries"]) >= 1
                    and int(row["behind"]) == 500 and f"failing sinks: {ch}" in ready), (row, ready)

        wait_until("the page shows ClickHouse failing", shows_down, timeout=60)
        assert row_of(driver, ice)["state"] == "up"
        # ClickHouse lacks the new records: it is complete to an earlier time than Iceberg.
        wait_until("Iceberg's watermark passes ClickHouse's", lambda: (
            row_of(driver, ice)["complete_to"] > row_of(driver, ch)["complete_to"],
            (row_of(driver, ch), row_of(driver, ice))), timeout=60)
        driver.save_screenshot(str(ARTIFACTS / "status-page-sink-down.png"))
        status = json.loads(ingest.get("/status.json")[1])
        assert not status["ready"] and status["not_ready"] == [f"failing sinks: {ch}"], status

        proxy.forward()
        wait_until("the page shows ClickHouse back", lambda: (
            row_of(driver, ch)["state"] == "up" and row_of(driver, ch)["behind"] == "0"
            and ready_text(driver) == "ready", row_of(driver, ch)), timeout=120)
        assert ingest.stop() == 0, ingest.logs()
    finally:
        if driver:
            driver.quit()
        proxy.stop()
    assert Path(ARTIFACTS / "status-page-sink-down.png").stat().st_size > 10_000
