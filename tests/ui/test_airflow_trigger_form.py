"""The training DAG's trigger form in Airflow's UI, driven in a real (headless) Chromium.

Users trigger training from the UI: the params must render as a form, a malformed month must be
refused before a run exists, and a filled form must start a run with exactly those params.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flightline.platform.config import Settings

pytestmark = pytest.mark.integration

DAG_ID = "flight_delay_training"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# what a closed network needs: no background calls home, no sandbox as root
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture
def page(platform: Settings) -> Iterator[Any]:
    """A logged-in browser page on the platform's Airflow UI; a screenshot stays in the home on failure."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(f"{platform.airflow_url}/dags/{DAG_ID}")
        page.locator("input[name=username]").fill(platform.airflow_admin_user)
        page.locator("input[name=password]").fill(platform.secret("airflow_admin_password"))
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"**/dags/{DAG_ID}**")
        try:
            yield page
        finally:
            page.screenshot(path=str(platform.logs_dir / "ui-trigger-form.png"))
            browser.close()


@pytest.fixture
def paused_dag(platform: Settings) -> Iterator[Any]:
    """The DAG paused, so a run triggered here stays queued (nothing runs); afterwards its runs are
    deleted and the pause state restored."""
    from flightline.platform.airflow_client import AirflowClient

    client = AirflowClient(platform)
    client.wait_for_dag(DAG_ID)
    was_paused = client.set_paused(DAG_ID, True)
    before = set(client.run_ids(DAG_ID))
    try:
        yield client
    finally:
        for run_id in set(client.run_ids(DAG_ID)) - before:
            client.delete_run(DAG_ID, run_id)
        client.set_paused(DAG_ID, was_paused)


def test_trigger_form_renders_the_params_refuses_a_bad_month_and_starts_the_run(page: Any, paused_dag: Any) -> None:
    from playwright.sync_api import expect

    page.get_by_role("button", name="Trigger").click()
    dialog = page.get_by_role("dialog")
    titles = ("Training from (YYYY-MM)", "Evaluation until (YYYY-MM)", "LightGBM num_leaves", "Max boosting rounds")
    for title in titles:
        assert dialog.get_by_text(title).first.is_visible(), title  # required ones carry a " *"
    assert dialog.locator("input[name=element_num_leaves]").input_value() == "63"  # the DAG's default

    # a logical date inside the DAG's 2013 dates, unique to this run of the test
    minute = int(time.time() // 60) % (24 * 60)
    logical = dt.datetime(2013, 12, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=minute)
    dialog.get_by_test_id("datetime-input").click()
    page.get_by_placeholder("YYYY/MM/DD").fill(f"{logical:%Y/%m/%d}")
    page.get_by_placeholder("HH:mm").fill(f"{logical:%H:%M}")
    dialog.get_by_role("heading").first.click()  # closes the date picker
    unpause = dialog.get_by_role("checkbox", name=f"Unpause {DAG_ID} on trigger")
    if unpause.is_checked():  # offered because the fixture paused the DAG: keep the run queued
        dialog.get_by_text(f"Unpause {DAG_ID} on trigger").click()  # the styled box hides the input
        assert not unpause.is_checked()

    trigger = dialog.get_by_role("button", name="Trigger")
    dialog.locator("input[name=element_eval_end]").fill("2013-13")
    trigger.click()
    expect(dialog.get_by_text("Invalid input for param eval_end")).to_be_visible()  # Airflow's 400, shown
    assert paused_dag.runs(DAG_ID, logical_date=logical) == [], "a month outside 01-12 started a run"
    toast = page.get_by_role("status").filter(has_text="Failed to Trigger Dag")
    expect(toast).to_be_visible()
    page.mouse.move(0, 0)  # a hovered toast stays; it covers the Trigger button
    expect(toast).to_be_hidden(timeout=30_000)

    wanted = {"train_start": "2013-01", "train_end": "2013-02", "eval_start": "2013-03", "eval_end": "2013-03"}
    for name, value in wanted.items():
        dialog.locator(f"input[name=element_{name}]").fill(value)
    dialog.locator("input[name=element_num_leaves]").fill("31")
    trigger.click()

    deadline = time.monotonic() + 30
    while not (runs := paused_dag.runs(DAG_ID, logical_date=logical)) and time.monotonic() < deadline:
        time.sleep(1)
    assert len(runs) == 1, "the form started no run (or more than one)"
    conf = runs[0]["conf"]
    assert {k: conf[k] for k in wanted} == wanted
    assert conf["num_leaves"] == 31 and conf["n_estimators"] == 600
    assert runs[0]["run_type"] == "manual"
