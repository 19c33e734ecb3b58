"""profile.html and report.html in a real browser: headless Chromium (Debian's ``chromium``
and ``chromium-driver``) via selenium. Each page must load without console errors and with
every embedded figure decoded; a full-page screenshot of each is saved as a test artefact
in $BALMM_ARTIFACTS (default tests/artifacts/, gitignored)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import balmm
from balmm.data.simulate import simulate

ARTIFACTS = Path(os.environ.get("BALMM_ARTIFACTS") or Path(__file__).parent / "artifacts")


def _chrome_paths() -> tuple[str, str] | str:
    """(browser, driver) paths, or the reason there is none."""
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(b)), None)  # fmt: skip
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        return (
            "no headless browser: install Debian's chromium and chromium-driver "
            "(apt-get install -y chromium chromium-driver; .ci/run does this)"
        )
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    found = _chrome_paths()
    if isinstance(found, str):
        pytest.skip(found)
    binary, driver_path = found
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,900"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=driver_path)
    drv = webdriver.Chrome(options=opts, service=service)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """A profile and a training run of small simulated data, written as the CLI writes them."""
    data = simulate(n_samples=160, seed=0)
    data.label_mapping = {"class0": "control", "class1": "case"}
    root = tmp_path_factory.mktemp("reports")
    balmm.profile(data, out=root / "prof", n_boot=20, seed=0)
    balmm.train(data, out=root / "run", seed=0, epochs=8, pretrain_epochs=4)
    return {"profile": root / "prof" / "profile.html", "report": root / "run" / "report.html"}


def _full_page_screenshot(drv, path: Path) -> None:
    height = drv.execute_script("return document.documentElement.scrollHeight")
    drv.set_window_size(1200, min(int(height) + 100, 16000))
    path.parent.mkdir(parents=True, exist_ok=True)
    assert drv.save_screenshot(str(path)), f"screenshot {path} not written"


@pytest.mark.parametrize("page", ["profile", "report"])
def test_report_loads_in_chromium_without_console_errors(browser, reports, page) -> None:
    browser.get(reports[page].as_uri())
    assert browser.title in ("balmm profile", "balmm train")
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], f"{page}.html console errors: {errors}"
    # every embedded PNG decoded (a corrupt data URI loads with naturalWidth 0)
    broken = browser.execute_script(
        "return Array.from(document.images)"
        ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)"
    )
    n_images = browser.execute_script("return document.images.length")
    assert n_images >= 4 and broken == [], f"{page}.html: {n_images} images, broken: {broken}"
    text = browser.find_element("tag name", "body").text
    assert "case" in text and "control" in text  # class names from the label mapping
    _full_page_screenshot(browser, ARTIFACTS / f"{page}.png")
    assert (ARTIFACTS / f"{page}.png").stat().st_size > 10_000
