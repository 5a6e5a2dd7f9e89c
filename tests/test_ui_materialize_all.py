"""What a new user does on a fresh instance, in a real browser: `vidistill ui` on a new
DAGSTER_HOME and data root (tiny settings), the global asset lineage filtered to the recipe's
groups (corpus, adaptation, captions, retrieval; not paper or teacher) with the asset selection
box, one click on "Materialize all" (and "Launch backfill", all partitions kept), and the
backfill that click launched runs to the end: every asset of those groups materialized, every
partition, no run failed. Headless Debian Chromium through its chromedriver (Selenium), as in
test_search_page_browser. Screenshots land in test-artifacts/ (or $VIDISTILL_TEST_ARTIFACTS).
Slow: the whole recipe trains and captions with tiny settings (~6-15 minutes on 2 cores)."""

import contextlib
import os
import sys
import time
from pathlib import Path

import pytest
from browser import headless_chromium
from tiny_runs import tiny_environment

from pipelines.local import free_port, server_process, wait_for_backfill

pytestmark = pytest.mark.slow

GROUPS = ("corpus", "adaptation", "captions", "retrieval")
QUERY = " or ".join(f'group:"{group}"' for group in GROUPS)
SHARDS = ["embedded-0000", "embedded-0001"]  # 16 clips, 8 a shard (tiny_environment)
SEEDS = ["0"]
BACKFILL_TIMEOUT_S = 20 * 60
ARTIFACTS = Path(
    os.environ.get(
        "VIDISTILL_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"
    )
)


@pytest.fixture
def browser():
    with headless_chromium("1600,1000") as session:
        yield session


def vidistill_ui(env: dict[str, str], log: Path):
    """`vidistill ui` on env's instance until the block ends; yields its Webserver."""
    port = free_port()
    command = [sys.executable, "-m", "pipelines.cli", "ui", "--port", str(port)]
    return server_process(command, port, env=env, log=log)


def _button(text: str, within: str = "") -> tuple[str, str]:
    """An XPath locator of a button by its text (a prefix), inside `within` (an XPath)."""
    from selenium.webdriver.common.by import By

    return By.XPATH, f"{within}//button[starts-with(normalize-space(), '{text}')]"


DIALOG = "//div[contains(@class, 'bp5-dialog')]"


def _skip_community_dialog(driver) -> None:
    """A new instance's UI opens "Join the Dagster community" a second after loading: Skip."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    skip = _button("Skip", DIALOG)
    try:
        WebDriverWait(driver, 5).until(ec.element_to_be_clickable(skip)).click()
    except TimeoutException:
        return  # not shown (seen before)
    WebDriverWait(driver, 10).until(ec.invisibility_of_element_located(skip))


@contextlib.contextmanager
def _screenshot_on_failure(driver, name: str):
    """What the page showed when the block failed, in ARTIFACTS/name."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(ARTIFACTS / name))
        raise


def _recipe_assets(instance) -> dict:
    """{asset key: the partitions a full materialization of the recipe's groups has (None:
    unpartitioned)}: every registered shard, seed "0" of the seed-partitioned assets."""
    from dagster import DynamicPartitionsDefinition

    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    out = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.group_name not in GROUPS:
            continue
        pdef = node.partitions_def
        if pdef is None:
            out[key] = None
        elif isinstance(pdef, DynamicPartitionsDefinition) and pdef.name == "clip_shards":
            out[key] = SHARDS
        elif isinstance(pdef, DynamicPartitionsDefinition) and pdef.name == "seeds":
            out[key] = SEEDS
        else:
            raise AssertionError(f"{key.to_user_string()}: unexpected partitions {pdef}")
    return out


def _failed_runs(instance) -> dict[str, list[str]]:
    """{failed run id (its assets): the errors its events report}."""
    from dagster import DagsterRunStatus, RunsFilter

    out = {}
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE])):
        errors = []
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None or event.event_type_value not in ("STEP_FAILURE", "RUN_FAILURE"):
                continue
            error = getattr(event.event_specific_data, "error", None)
            text = error.to_string() if error else entry.message
            errors.append(f"{event.step_key or 'run'}: {text[-3000:]}")
        assets = sorted(k.to_user_string() for k in run.asset_selection or ())
        out[f"{run.run_id} {assets} {run.tags.get('dagster/partition', '')}"] = errors
    return out


def test_materialize_all_of_the_recipe_on_a_fresh_instance(tmp_path, browser, monkeypatch):
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    env = tiny_environment(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("ui_materialize_all*"):
        old.unlink()  # none left from an earlier run
    log = ARTIFACTS / "ui_materialize_all.log"
    with (
        vidistill_ui(env, log) as server,
        DagsterInstance.get() as instance,
        _screenshot_on_failure(browser, "ui_materialize_all_failure.png"),
    ):
        assert sorted(instance.get_dynamic_partitions("clip_shards")) == SHARDS
        assert instance.get_dynamic_partitions("seeds") == SEEDS
        expected = _recipe_assets(instance)
        # the UI re-renders as its data arrives: an element found may be gone a moment later
        wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))

        # the global asset lineage, filtered to the recipe's groups in the selection box
        browser.get(f"{server.url}/asset-groups")
        wait.until(ec.element_to_be_clickable(_button("Materialize all")))
        _skip_community_dialog(browser)
        selection = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".CodeMirror")))
        selection.click()
        selection.find_element(By.CSS_SELECTOR, "textarea").send_keys(QUERY, Keys.ENTER)

        def groups_shown(driver) -> set[str]:  # the sidebar's group buttons
            names = {"corpus", "adaptation", "captions", "retrieval", "paper", "teacher"}
            return names.intersection(b.text for b in driver.find_elements(By.TAG_NAME, "button"))

        wait.until(lambda d: groups_shown(d) == set(GROUPS))
        browser.save_screenshot(str(ARTIFACTS / "ui_materialize_all_graph.png"))

        # "Materialize all": Dagster first warns that upstream assets outside the selection
        # (the paper's and the teacher's) are not materialized; the user confirms
        wait.until(ec.element_to_be_clickable(_button("Materialize all"))).click()
        launch_title = f"Launch runs to materialize {len(expected)} assets"
        wait.until(
            lambda d: (
                d.find_elements(*_button("Confirm", DIALOG))
                or launch_title in "".join(e.text for e in d.find_elements(By.XPATH, DIALOG))
            )
        )
        if browser.find_elements(*_button("Confirm", DIALOG)):
            browser.save_screenshot(str(ARTIFACTS / "ui_materialize_all_confirm.png"))
            wait.until(ec.element_to_be_clickable(_button("Confirm", DIALOG))).click()
        launch_dialog = (By.XPATH, f"{DIALOG}[.//*[contains(text(), '{launch_title}')]]")
        dialog_text = wait.until(lambda d: d.find_element(*launch_dialog).text)
        assert "All partitions" in dialog_text, dialog_text  # the partition selection kept
        browser.save_screenshot(str(ARTIFACTS / "ui_materialize_all_dialog.png"))

        # "Launch backfill", and the backfill it launched
        before = {b.backfill_id for b in instance.get_backfills()}
        wait.until(ec.element_to_be_clickable(_button("Launch backfill", DIALOG))).click()
        launched = WebDriverWait(browser, 60, poll_frequency=1).until(
            lambda _: [b for b in instance.get_backfills() if b.backfill_id not in before]
        )
        assert len(launched) == 1, launched
        backfill_id = launched[0].backfill_id
        wait.until(ec.invisibility_of_element_located((By.XPATH, DIALOG)))
        browser.save_screenshot(str(ARTIFACTS / "ui_materialize_all_launched.png"))
        targeted = launched[0].asset_selection
        assert sorted(k.to_user_string() for k in targeted) == sorted(
            k.to_user_string() for k in expected
        )

        started = time.monotonic()
        status = wait_for_backfill(server, backfill_id, timeout_s=BACKFILL_TIMEOUT_S, poll_s=5)
        took = time.monotonic() - started
        browser.get(f"{server.url}/runs/b/{backfill_id}")
        with contextlib.suppress(TimeoutException):  # the page for the record; checks follow
            WebDriverWait(browser, 30).until(
                ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "100% completed")
            )
        browser.save_screenshot(str(ARTIFACTS / "ui_materialize_all_backfill.png"))

        counts = {
            s.value: instance.get_runs_count(RunsFilter(statuses=[s])) for s in DagsterRunStatus
        }
        failed = _failed_runs(instance)
        assert status == "COMPLETED_SUCCESS", (status, f"{took:.0f}s", counts, failed)
        assert counts["FAILURE"] == 0 and counts["CANCELED"] == 0, (counts, failed)
        assert counts["SUCCESS"] > 0, counts

        missing = {}
        for key, partitions in expected.items():
            if partitions is None:
                if instance.get_latest_materialization_event(key) is None:
                    missing[key.to_user_string()] = None
            else:
                done = instance.get_materialized_partitions(key)
                if todo := [p for p in partitions if p not in done]:
                    missing[key.to_user_string()] = todo
        assert not missing, f"not materialized after the backfill: {missing}"
