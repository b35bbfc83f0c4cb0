"""The editor in a real browser: headless Chromium from the distribution's packages, driven by
Selenium through the distribution's chromedriver (browser downloads by test tools do not work
offline). The page is served by editor.py over the tiny run that conftest.py trains; the test
clicks an object, restyles it, relabels it, removes it, adds one from the gallery, paints,
undoes, saves, and checks the saved maps and where the image changed. It skips, saying why,
where Chromium, chromedriver or Selenium is missing (``.ci/run`` installs them).

Run as a script, the same page driver takes the README's screenshot of a running editor:
``python tests/test_editor_browser.py URL docs/editor.png X Y GALLERY PX PY`` selects the object
at label pixel (X, Y), restyles it with its class's first cluster, pastes gallery object GALLERY
at (PX, PY), and saves the screenshot."""

import io
import shutil
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

import editor
import edits
import infer

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def need_browser():
    """Selenium's webdriver module, or a skip that names what is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install chromium "
                    "chromium-driver)")
    return pytest.importorskip("selenium.webdriver",
                               reason="selenium not installed (pip install selenium)")


def chromium(webdriver):
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--window-size=1100,1000"):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    return webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def browser():
    driver = chromium(need_browser())
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def served(feature_run, tmp_path_factory):
    model = infer.load_model(feature_run["ckpt"] / "feat" / "latest.pt")
    session = editor.Editor(model, feature_run["city"], "test",
                            infer.load_clusters(feature_run["clusters"]),
                            tmp_path_factory.mktemp("browser_edits"))
    server = editor.serve(session, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield session, editor.url(server)
    server.shutdown()
    server.server_close()


class Page:
    """The editor's page in the browser: clicks, and waits for each action to finish (the page
    counts finished actions in body[data-done])."""

    def __init__(self, driver, url):
        from selenium.webdriver.common.by import By
        self.driver, self.By, self.done = driver, By, 0
        driver.get(url)
        self.wait()

    def find(self, css):
        return self.driver.find_element(self.By.CSS_SELECTOR, css)

    def wait(self):
        """Until one more action has finished."""
        self.done += 1
        deadline = time.monotonic() + 30
        while int(self.find("body").get_attribute("data-done")) < self.done:
            assert time.monotonic() < deadline, "the page did not finish an action in 30 s"
            time.sleep(0.02)
        assert self.find("#status").get_attribute("class") != "error", self.find("#status").text

    def click(self, css):
        self.find(css).click()
        self.wait()

    def click_pixel(self, x, y, width):
        """A click on pixel (x, y) of the label map, shown ``width`` pixels wide in the page."""
        from selenium.webdriver.common.action_chains import ActionChains
        img = self.find("#label")
        scale = img.size["width"] / width
        ActionChains(self.driver).move_to_element_with_offset(
            img, (x + 0.5) * scale - img.size["width"] / 2,
            (y + 0.5) * scale - img.size["height"] / 2).click().perform()
        self.wait()


def largest_car(inst):
    ids, counts = np.unique(inst[inst // 1000 == 26], return_counts=True)
    return int(ids[counts.argmax()])


def centre_pixel(mask):
    ys, xs = np.nonzero(mask)
    order = np.lexsort((xs, ys))[len(xs) // 2]
    return int(xs[order]), int(ys[order])


def test_the_page_edits_a_map_end_to_end(browser, served, tmp_path):
    from selenium.webdriver.support.ui import Select
    start = time.perf_counter()
    session, url = served
    page = Page(browser, url)
    original = session.state
    W = original.label.shape[1]
    car = largest_car(original.inst)
    page.click_pixel(*centre_pixel(original.inst == car), W)
    assert page.find("#selection").text.startswith(f"{car} car")
    styles = browser.find_elements(page.By.CSS_SELECTOR, "#styles img")
    assert len(styles) == len(session.clusters[26])
    styles[-1].click()                                              # restyle
    page.wait()
    assert np.array_equal(session.state.table[car], session.clusters[26][-1])
    Select(page.find("#class")).select_by_value("27")
    page.click("#relabel")
    assert page.find("#selection").text.startswith("27000 truck")
    page.click("#remove")
    assert not (session.state.inst // 1000 == 27).any()
    page.click("#gallery img")                                      # add: pick, then place
    source = session.gallery[0]
    page.click_pixel(8, 4, W)
    pasted = session.selected
    assert pasted // 1000 == source["id"] // 1000 and session.state.inst[4, 8] == pasted
    page.find("input[name=mode][value=brush]").click()
    Select(page.find("#paint_class")).select_by_value("21")
    unpainted = session.state.inst
    page.click_pixel(W - 3, 3, W)                                   # a brush of radius 4
    disc = edits.brush(original.inst.shape, W - 3, 3, 4)
    assert (session.state.inst[disc] == 21).all() and session.position == 5
    page.click("#undo")                                              # the paint goes
    assert session.position == 4 and np.array_equal(session.state.inst, unpainted)
    browser.save_screenshot(str(tmp_path / "editor.png"))
    page.click("#save")
    assert "saved" in page.find("#status").text
    check_saved(session, original, car, pasted)
    print(f"browser test: {time.perf_counter() - start:.1f} s of page work")


def check_saved(session, original, car, pasted):
    """The saved maps are the session's; the image changed inside the edited region (the
    removed car, the pasted object) far more than outside it."""
    stem = f"{session.dataset.stems[0]}_edit1"
    inst = np.asarray(Image.open(session.out_dir / f"{stem}_gtFine_instanceIds.png"))
    assert np.array_equal(inst, session.state.inst)
    assert (inst[original.inst == car] < 1000).all()               # removed: stuff now
    edited = (original.inst == car) | (inst == pasted)
    assert np.array_equal(edited, original.inst != inst)
    before = np.asarray(Image.open(io.BytesIO(original.image)), dtype=float)
    after = np.asarray(Image.open(session.out_dir / f"{stem}_synthesized.png"), dtype=float)
    change = np.abs(after - before).mean(axis=2)
    assert change[edited].mean() > 2 * change[~edited].mean()


def screenshot(url, out, x, y, gallery, px, py):
    from selenium import webdriver
    driver = chromium(webdriver)
    try:
        page = Page(driver, url)
        width = int(page.find("#stem").text.split("(")[1].split("x")[0])
        page.click_pixel(x, y, width)
        page.click("#styles img")
        page.click(f"#gallery img[data-n='{gallery}']")
        page.click_pixel(px, py, width)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(out)
    finally:
        driver.quit()


if __name__ == "__main__":
    screenshot(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8]))
