"""The dashboard as a person uses it: headless Chromium on a real `pgqueue dashboard`, with
real `pgqueue worker` processes running the jobs (tests/dashboard/browser_app.py).

One database, two workers and two dashboards (one with a login, one read-only) serve the whole
module; each test makes its own jobs. Every page a test opens is watched: a JavaScript error,
a Content-Security-Policy violation or an unexpected dialog fails the test. The last test
saves screenshots of every page at 1280x800 and at a phone's width, into PGQUEUE_SCREENSHOTS
if set, else the test's tmp_path.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytest.importorskip("playwright.sync_api", reason="the browser tests need the playwright package")
from playwright.sync_api import Browser, Page, expect, sync_playwright

from pgqueue import admin
from tests.acceptance.helpers import WorkerProcess, job_row, wait_for_status
from tests.conftest import wait_until, with_dbname
from tests.dashboard import browser_app
from tests.dashboard.browser import (
    DashboardProcess,
    PageWatch,
    chromium_path,
    wait_for_live_refresh,
)

APP = "tests.dashboard.browser_app:app"
USER, PASSWORD = "ops", "correct horse battery staple"
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = '"><img src=x onerror=alert(1)>'
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 30_000  # how long an expectation on the page may take (live parts refresh every 5 s)
expect.set_options(timeout=WAIT_MS)


# -- the module's servers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """One migrated database for the whole module."""
    name = f"pgqueue_browser_{os.getpid()}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield with_dbname(server_dsn, name)
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def db(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(browser_app.TABLES_DDL)
        yield conn


@pytest.fixture(scope="module")
def workers(
    dsn: str, db: psycopg.Connection[Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    """Two worker processes serving every queue of the app, and running its schedules."""
    logs = tmp_path_factory.mktemp("workers")
    started = [
        WorkerProcess(
            dsn, logs / f"worker-{n}.log", ["--concurrency", "4", "--poll-interval", "0.5"], APP
        ).launch()
        for n in (1, 2)
    ]
    try:
        yield [worker.wait_ready() for worker in started]
    finally:
        for worker in started:
            worker.cleanup()
            print(f"----- {worker.log_path.name}\n{worker.log()}")


def _dashboard(
    dsn: str, tmp_path_factory: pytest.TempPathFactory, name: str, *args: str
) -> Iterator[DashboardProcess]:
    log = tmp_path_factory.mktemp(name) / "dashboard.log"
    env = {"PGQUEUE_DASHBOARD_USER": USER, "PGQUEUE_DASHBOARD_PASSWORD": PASSWORD}
    process = DashboardProcess(dsn, log, ["--app", APP, *args], env)
    try:
        yield process.wait_ready()
    finally:
        process.stop()
        print(f"----- {name}\n{process.log()}")


@pytest.fixture(scope="module")
def dashboard(
    dsn: str, workers: list[WorkerProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DashboardProcess]:
    """The dashboard with a login (user and password from the environment)."""
    yield from _dashboard(dsn, tmp_path_factory, "dashboard")


@pytest.fixture(scope="module")
def read_only_dashboard(
    dsn: str, workers: list[WorkerProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DashboardProcess]:
    yield from _dashboard(dsn, tmp_path_factory, "read-only", "--read-only")


# -- the browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def log_in(page: Page, user: str = USER, password: str = PASSWORD) -> None:
    page.get_by_label("User").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


@pytest.fixture(scope="module")
def session(browser: Browser, dashboard: DashboardProcess) -> Any:
    """The cookies of a logged-in session, for the tests that do not test the login."""
    context = browser.new_context(base_url=dashboard.url)
    page = context.new_page()
    page.goto("/login")
    log_in(page)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    state = context.storage_state()
    context.close()
    return state


OpenPage = Callable[..., tuple[Page, PageWatch]]


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    """`open_page(base_url, state=None, viewport=DESKTOP)`: a new page in its own context,
    watched; at the end of the test, any problem a watch saw fails it."""
    opened: list[tuple[Any, PageWatch]] = []

    def open_one(
        base_url: str, state: Any = None, viewport: dict[str, int] = DESKTOP, **options: Any
    ) -> tuple[Page, PageWatch]:
        context = browser.new_context(
            base_url=base_url, storage_state=state, viewport=viewport, **options
        )
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        watch = PageWatch(page)
        opened.append((context, watch))
        return page, watch

    yield open_one
    problems = [p for _, watch in opened for p in watch.problems]
    for context, _ in opened:
        context.close()
    assert not problems, "the pages showed problems:\n" + "\n".join(problems)


@pytest.fixture
def page(open_page: OpenPage, dashboard: DashboardProcess, session: Any) -> Page:
    """A logged-in page of the dashboard at 1280x800."""
    return open_page(dashboard.url, session)[0]


# -- jobs -----------------------------------------------------------------------------------


def enqueue(db: psycopg.Connection[Any], task: Any, *args: Any, **options: Any) -> int:
    return int(task.apply_async(args=args, connection=db, **options).id)


def wait_ended(db: psycopg.Connection[Any], job_ids: list[int], timeout: float = 60.0) -> None:
    wait_until(
        lambda: all(job_row(db, i)["status"] in ("succeeded", "failed") for i in job_ids),
        timeout=timeout,
        interval=0.1,
        what=f"jobs {job_ids} to end",
    )


def is_paused(db: psycopg.Connection[Any], queue: str) -> bool:
    row = db.execute("SELECT paused_at FROM pgqueue_queues WHERE name = %s", (queue,)).fetchone()
    return row is not None and row[0] is not None


# -- the scenarios --------------------------------------------------------------------------


def test_logging_in_leads_to_the_overview(open_page: OpenPage, dashboard: DashboardProcess) -> None:
    page, watch = open_page(dashboard.url)
    watch.allow("status of 401")  # the wrong password's answer
    page.goto("/jobs?status=failed")
    expect(page).to_have_url(re.compile(r"/login\?next="))

    log_in(page, password="wrong")
    expect(page.get_by_role("alert")).to_have_text("wrong credentials")

    log_in(page)
    expect(page).to_have_url(re.compile(r"/jobs\?status=failed$"))
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.get_by_role("button", name=f"log out {USER}")).to_be_visible()


# What the overview's charts show, read from their SVG: the jobs counted as succeeded (each
# bar's title ends with its count), and the points of the queue depth line.
SUCCEEDED_IN_CHART = """() => [...document.querySelectorAll(
    '[data-testid=chart-ended] rect.series-succeeded title')]
    .reduce((n, t) => n + Number(t.textContent.split(': ').pop()), 0)"""
DEPTH_POINTS = """() => (document.querySelector('[data-testid=chart-depth] path.series-ready')
    ?.getAttribute('d').match(/[ML]/g) || []).length"""


def wait_for_count(page: Page, count: str, least: int) -> None:
    """Until the `count` function returns `least` or more (given as a function: the CSP
    forbids the eval a bare expression would need)."""
    page.wait_for_function(f"least => ({count})() >= least", arg=least, timeout=60_000)


def test_the_overview_charts_fill_with_data_without_a_reload(
    page: Page, db: psycopg.Connection[Any]
) -> None:
    page.goto("/")
    page.evaluate("window.stillTheSamePage = true")
    succeeded = page.evaluate(SUCCEEDED_IN_CHART)
    points = page.evaluate(DEPTH_POINTS)

    ids = [
        enqueue(db, browser_app.send_email, f"user{n}@example.com", "welcome") for n in range(20)
    ]
    ids += [enqueue(db, browser_app.resize_image, f"photo{n}.jpg", 300 + n) for n in range(10)]
    wait_ended(db, ids)
    # Workers write their counts a few times a minute, and the depth is sampled every 10 s:
    # the live refreshes bring both in.
    wait_for_count(page, SUCCEEDED_IN_CHART, succeeded + len(ids))
    wait_for_count(page, DEPTH_POINTS, max(2, points + 1))
    expect(page.get_by_test_id("chart-ended")).not_to_contain_text("no data yet")
    expect(page.get_by_test_id("chart-depth")).not_to_contain_text("no data yet")
    expect(
        page.get_by_test_id("chart-duration").locator("path.line, circle.dot").first
    ).to_be_attached()
    assert page.get_attribute("#live", "data-updated"), "the charts came by a live refresh"
    assert page.evaluate("window.stillTheSamePage") is True


def test_jobs_filter_by_status_and_by_text_in_arguments(
    page: Page, db: psycopg.Connection[Any]
) -> None:
    needle = enqueue(db, browser_app.send_email, "needle-4711@example.com", "invoice")
    other = enqueue(db, browser_app.send_email, "someone@example.com", "invoice")
    declined = enqueue(db, browser_app.charge_card, 1041, "€89.00")
    wait_ended(db, [needle, other, declined])

    page.goto("/jobs")
    page.get_by_role("checkbox", name="failed", exact=True).check()
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"status=failed"))
    rows = page.locator("table.jobs tbody tr")
    expect(rows.filter(has=page.get_by_role("link", name=str(declined), exact=True))).to_have_count(
        1
    )
    for status in rows.locator("span.status").all_inner_texts():
        assert status == "failed"

    page.get_by_role("link", name="clear").click()
    page.get_by_label("Text in arguments").fill("needle-4711")
    page.get_by_label("Text in arguments").press("Enter")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(str(needle))
    expect(rows.first).to_contain_text("send_email")


def test_a_failed_job_shows_its_traceback_and_a_retry_makes_it_succeed(
    page: Page, db: psycopg.Connection[Any]
) -> None:
    job_id = enqueue(db, browser_app.sync_inventory, "store-berlin")
    wait_for_status(db, job_id, "failed")

    page.goto("/jobs?status=failed")
    page.get_by_role("link", name=str(job_id), exact=True).click()
    expect(page.get_by_test_id("status")).to_have_text("failed")
    expect(page.get_by_test_id("error")).to_have_text(
        "ConnectionError: inventory service of store-berlin timed out"
    )
    traceback = page.get_by_test_id("traceback")
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text("in sync_inventory")

    page.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status")).to_have_text("1 job(s) put back in the queue")
    # The page's live part follows the job to its end, without a reload.
    expect(page.get_by_test_id("status")).to_have_text("succeeded")
    expect(page.get_by_test_id("result")).to_contain_text("store-berlin: inventory in sync")
    expect(page.locator("table.attempts tbody tr")).to_have_count(2)
    assert job_row(db, job_id)["status"] == "succeeded"


def test_a_paused_queue_keeps_its_jobs_until_it_is_resumed(
    page: Page, db: psycopg.Connection[Any]
) -> None:
    page.goto("/queues")
    row = page.locator("tr[data-queue=exports]")
    row.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_contain_text("queue paused")
    expect(row.locator(".badge.paused")).to_have_text("paused")
    assert is_paused(db, "exports")

    held = [enqueue(db, browser_app.export_csv, f"sales-{n}") for n in range(3)]
    # A job of another queue, enqueued after them, runs: the workers take jobs, not these.
    wait_for_status(db, enqueue(db, browser_app.send_email, "after@example.com", "x"), "succeeded")
    assert [job_row(db, i)["status"] for i in held] == ["queued"] * 3
    ready = row.locator("td").nth(3)
    expect(ready).to_have_text("3")  # after a live refresh of the table

    row.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_have_text("queue resumed")
    for job_id in held:
        wait_for_status(db, job_id, "succeeded")
    expect(row.locator("td").nth(1)).to_have_text("active")
    expect(ready).to_have_text("0")


def test_a_schedule_runs_now_from_its_page(page: Page, db: psycopg.Connection[Any]) -> None:
    page.goto("/schedules")
    row = page.locator("tr[data-schedule=nightly-report]")
    expect(row).to_contain_text("0 3 * * *")
    row.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("status")).to_have_text("schedule's job enqueued")

    def made() -> int | None:
        found = db.execute(
            "SELECT id FROM pgqueue_all_jobs WHERE task_name = %s",
            (browser_app.nightly_report.name,),
        ).fetchone()
        return int(found[0]) if found else None

    job_id = wait_until(made, timeout=10, what="the schedule's job")
    wait_for_status(db, job_id, "succeeded")
    page.reload()
    expect(row.get_by_role("link", name=str(job_id), exact=True)).to_be_visible()
    expect(row).to_contain_text("succeeded")


def test_hostile_arguments_stay_text_on_every_page(
    open_page: OpenPage, dashboard: DashboardProcess, session: Any, db: psycopg.Connection[Any]
) -> None:
    page, watch = open_page(dashboard.url, session)
    echoed = [enqueue(db, browser_app.echo, text) for text in (XSS_SCRIPT, XSS_IMG)]
    rejected = enqueue(db, browser_app.reject, f"{XSS_SCRIPT} {XSS_IMG}")
    wait_ended(db, [*echoed, rejected])

    def no_payload_ran() -> None:
        expect(page.locator("img")).to_have_count(0)
        expect(page.locator("script")).to_have_count(1)  # dashboard.js
        assert "alert" not in "".join(watch.problems)

    for path in ("/", "/jobs?q=alert", f"/jobs/{echoed[0]}", f"/jobs/{echoed[1]}"):
        page.goto(path)
        no_payload_ran()
    expect(page.get_by_test_id("args")).to_have_text(json.dumps([XSS_IMG], indent=2))
    expect(page.get_by_test_id("result")).to_have_text(json.dumps(XSS_IMG))

    page.goto(f"/jobs/{rejected}")
    no_payload_ran()
    expect(page.get_by_test_id("error")).to_have_text(f"ValueError: {XSS_SCRIPT} {XSS_IMG}")
    expect(page.get_by_test_id("traceback")).to_contain_text(f"ValueError: {XSS_SCRIPT} {XSS_IMG}")

    page.goto("/")
    expect(page.get_by_text(f"ValueError: {XSS_SCRIPT} {XSS_IMG}").first).to_be_visible()
    wait_for_live_refresh(page)  # what the live refresh swaps in is text too
    no_payload_ran()

    # And the browser enforces the policy: an inline handler that got in would not run.
    watch.allow("Content Security Policy")
    page.evaluate(
        "document.body.insertAdjacentHTML('beforeend',"
        " '<button id=probe onclick=\"document.title=&quot;pwned&quot;\">probe</button>')"
    )
    page.locator("#probe").click()
    assert page.title() != "pwned"
    # Done with them: the screenshots show the application's own jobs.
    admin.delete(db, [*echoed, rejected])


def test_selected_jobs_are_deleted_together(page: Page, db: psycopg.Connection[Any]) -> None:
    ids = [enqueue(db, browser_app.echo, f"batch-7731 item {n}") for n in range(3)]
    wait_ended(db, ids)
    page.goto("/jobs?q=batch-7731")
    expect(page.locator("table.jobs tbody tr")).to_have_count(3)
    page.get_by_label("all on this page").check()
    page.get_by_label("action on the selected jobs").select_option("delete")
    page.get_by_role("button", name="Apply to selected").click()
    expect(page.get_by_role("status")).to_have_text("3 job(s) deleted")
    expect(page.get_by_text("No job matches.")).to_be_visible()
    found = db.execute("SELECT count(*) FROM pgqueue_all_jobs WHERE id = ANY(%s)", (ids,))
    assert found.fetchone() == (0,)


def test_a_post_without_its_csrf_token_is_refused(
    open_page: OpenPage, dashboard: DashboardProcess, session: Any, db: psycopg.Connection[Any]
) -> None:
    page, watch = open_page(dashboard.url, session)
    watch.allow("status of 403")  # the page's own fetch below, refused
    page.goto("/queues")
    url = f"{dashboard.url}/queues/reports/pause"
    for form in ({"next": "/queues"}, {"csrf": "forged", "next": "/queues"}):
        answer = page.request.post(url, form=form, max_redirects=0)
        assert answer.status == 403
        assert "did not come from the dashboard" in answer.text()
    fetched = page.evaluate(
        "url => fetch(url, {method: 'POST', body: new URLSearchParams({next: '/queues'})})"
        ".then(r => r.status)",
        url,
    )
    assert fetched == 403
    assert not is_paused(db, "reports")

    # The same request with the page's token is obeyed: the token made the difference.
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    answer = page.request.post(url, form={"csrf": token or ""}, max_redirects=0)
    assert answer.status == 303
    assert is_paused(db, "reports")
    resumed = page.request.post(
        url.replace("/pause", "/resume"), form={"csrf": token or ""}, max_redirects=0
    )
    assert resumed.status == 303
    assert not is_paused(db, "reports")


def test_a_read_only_dashboard_shows_no_action_and_refuses_them(
    open_page: OpenPage, read_only_dashboard: DashboardProcess, db: psycopg.Connection[Any]
) -> None:
    failed = enqueue(db, browser_app.charge_card, 1043, "€12.00")
    wait_for_status(db, failed, "failed")
    page, _ = open_page(read_only_dashboard.url)
    page.goto("/login")
    log_in(page)
    expect(page.locator("header .badge")).to_have_text("read-only")
    for path in ("/", "/queues", "/jobs", f"/jobs/{failed}", "/workers", "/schedules"):
        page.goto(path)
        expect(page.locator("main h1")).to_be_visible()
        expect(page.locator("main form[method=post] button")).to_have_count(0)
        expect(page.locator("main input[type=checkbox][name=ids]")).to_have_count(0)

    token = page.locator("header input[name=csrf]").get_attribute("value")
    assert token
    for action in ("queues/exports/pause", f"jobs/{failed}/retry", "schedules/nightly-report/run"):
        answer = page.request.post(
            f"{read_only_dashboard.url}/{action}", form={"csrf": token}, max_redirects=0
        )
        assert answer.status == 403, action
        assert "read-only" in answer.text()
    assert not is_paused(db, "exports")
    assert job_row(db, failed)["status"] == "failed"


def screenshot(page: Page, path: Path) -> None:
    """The page from its top, down to twice the window's height at most (a long list of jobs
    needs no more to be seen)."""
    viewport = page.viewport_size
    assert viewport is not None
    height = page.evaluate("document.documentElement.scrollHeight")
    clip = {
        "x": 0,
        "y": 0,
        "width": viewport["width"],
        "height": min(height, 2 * viewport["height"]),
    }
    page.screenshot(path=path, full_page=True, clip=clip)


def test_screenshots_of_every_page(
    open_page: OpenPage,
    dashboard: DashboardProcess,
    session: Any,
    db: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    folder = Path(os.environ.get("PGQUEUE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    failed = enqueue(db, browser_app.charge_card, 1042, "€129.00")
    for n in range(4):  # later jobs, for the scheduled count and the depth chart
        enqueue(db, browser_app.send_email, f"reminder{n}@example.com", "reminder", countdown=3600)
    running = enqueue(db, browser_app.import_catalog, "acme-supplies", 120.0)
    wait_for_status(db, failed, "failed")
    wait_for_status(db, running, "running")
    paths = {
        "overview": "/",
        "queues": "/queues",
        "jobs": "/jobs",
        "failed-job": f"/jobs/{failed}",
        "workers": "/workers",
        "schedules": "/schedules",
    }

    for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        options = {"is_mobile": True, "has_touch": True} if size == "phone" else {}
        page, _ = open_page(dashboard.url, session, viewport, **options)
        for name, path in paths.items():
            page.goto(path)
            if name == "overview":
                chart = page.get_by_test_id("chart-depth").locator("path.line").first
                expect(chart).to_be_attached(timeout=60_000)
            screenshot(page, folder / f"{size}-{name}.png")
        login, _ = open_page(dashboard.url, None, viewport, **options)
        login.goto("/login")
        screenshot(login, folder / f"{size}-login.png")

    for size in ("desktop", "phone"):
        for name in (*paths, "login"):
            assert (folder / f"{size}-{name}.png").stat().st_size > 0
