"""The page of `lm serve` in a real headless browser: Debian's Chromium driven by Playwright.

The browser is the system's chromium (`apt-get install chromium`; .ci/run installs it), never a
download. `python tests/test_serve_page.py CHECKPOINT` rewrites docs/serve.md's screenshot,
docs/serve.png, with that model.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import lm
from lm.suggest.engine import Suggester

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TYPED = "the clouds are in the"
WAIT_MS = 20_000

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary: apt-get install chromium (.ci/run does)")


def open_page(playwright, url: str, height: int = 470):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 760, "height": height})
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    return browser, page


def type_and_wait(page, text: str) -> list[str]:
    """Type text into the box key by key and wait for the strip to answer it; returns its words."""
    page.locator("#text").press_sequentially(text, delay=15)
    page.wait_for_selector(f"#strip[data-text={text!r}]:not(.stale)")
    return [slot.text_content() for slot in page.locator(".suggestion:not([disabled])").all()]


def test_the_strip_follows_typing_and_tab_inserts_the_top_suggestion(tiny_checkpoints, tmp_path):
    from playwright.sync_api import sync_playwright

    from test_serve import served

    checkpoint = str(tiny_checkpoints("char"))
    expected = Suggester(lm.load(checkpoint, int8=True).backend, lm.load(checkpoint).tokenizer, lexicon=lm.Lexicon.load(checkpoint)).suggest(TYPED)  # as served
    with served(checkpoint) as (_, url):
        with sync_playwright() as playwright:
            browser, page = open_page(playwright, url)
            shown = type_and_wait(page, TYPED)
            assert shown == [f"{s.word}{s.probability * 100:.1f}%" for s in expected]
            page.screenshot(path=str(tmp_path / "serve.png"))
            page.keyboard.press("Tab")
            inserted = TYPED + expected[0].completion + " "
            page.wait_for_selector(f"#strip[data-text={inserted!r}]:not(.stale)")
            assert page.input_value("#text") == inserted
            assert page.evaluate("document.activeElement.id") == "text"  # Tab stayed in the box
            assert "ms on the server" in page.locator("#status").text_content()
            assert Path(checkpoint).name in page.locator("#model").text_content()
            browser.close()


def test_continue_streams_a_generation_into_the_box(tiny_checkpoints):
    from playwright.sync_api import sync_playwright

    from test_serve import served

    with served(str(tiny_checkpoints("char"))) as (_, url):
        with sync_playwright() as playwright:
            browser, page = open_page(playwright, url)
            type_and_wait(page, TYPED + " ")
            page.keyboard.press("Control+Enter")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('continued by')")
            text = page.input_value("#text")
            assert text.startswith(TYPED + " ") and len(text.split()) > len(TYPED.split())
            page.wait_for_function("text => { const strip = document.getElementById('strip');"
                                   " return strip.dataset.text === text && !strip.classList.contains('stale'); }",
                                   arg=text)  # the strip for the longer text...
            assert page.text_content("#status").startswith("continued by")  # ...leaves the generation's summary
            assert page.locator("#continue").text_content() == "Continue"
            browser.close()


TYPO, FIXED = "the clouds are in teh ", "the clouds are in the "


def wait_for_strip(page, text: str) -> list[tuple[str, str]]:
    """Wait for the strip to answer `text`; returns its words with their slots."""
    page.wait_for_selector(f"#strip[data-text={text!r}]:not(.stale)")
    return [(slot.evaluate("s => s.firstChild.textContent"), slot.get_attribute("data-slot"))
            for slot in page.locator(".suggestion:not([disabled])").all()]


def test_a_word_finished_with_a_typo_is_corrected_on_space_and_one_backspace_undoes_it(tiny_checkpoints):
    from playwright.sync_api import sync_playwright

    from test_serve import served

    checkpoint = str(tiny_checkpoints("char"))
    assert lm.suggest_text(TYPO, checkpoint, int8=True).text == FIXED  # the library corrects it (as served)
    with served(checkpoint) as (_, url):
        with sync_playwright() as playwright:
            browser, page = open_page(playwright, url)
            page.locator("#text").press_sequentially(TYPO, delay=15)
            assert wait_for_strip(page, FIXED)[:2] == [("teh", "typed"), ("the", "correction")]
            assert page.input_value("#text") == FIXED
            assert page.evaluate("document.getElementById('text').selectionStart") == len(FIXED)
            page.keyboard.press("End")  # a caret move does not ask again for the corrected text...
            page.keyboard.press("Backspace")  # ...which would make the server forget the correction
            wait_for_strip(page, TYPO[:-1])
            assert page.input_value("#text") == TYPO[:-1]  # the typed word back, without the space
            page.keyboard.press("Space")
            wait_for_strip(page, TYPO)  # the session took the undo: teh stays
            assert page.input_value("#text") == TYPO
            browser.close()


def key_centre(page, label: str) -> tuple[float, float]:
    box = page.locator(f".key[data-key={label!r}]").bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_tab_fixes_a_slip_and_a_click_on_a_key_types_it_and_a_drag_across_keys_swipes_a_word(tiny_checkpoints):
    from playwright.sync_api import sync_playwright

    from test_serve import served

    with served(str(tiny_checkpoints("char"))) as (_, url):
        with sync_playwright() as playwright:
            browser, page = open_page(playwright, url)
            page.locator("#text").press_sequentially(TYPO[:-1], delay=15)
            assert wait_for_strip(page, TYPO[:-1])[0] == ("the", "prediction")  # replaces "teh"
            page.keyboard.press("Tab")
            wait_for_strip(page, FIXED)
            assert page.input_value("#text") == FIXED
            page.keyboard.press("Backspace")
            page.keyboard.press("Backspace")
            wait_for_strip(page, TYPED[:-1])
            page.mouse.click(*key_centre(page, "e"))
            wait_for_strip(page, TYPED)
            assert page.input_value("#text") == TYPED
            page.mouse.move(*key_centre(page, "s"))
            page.mouse.down()
            for label in "ky":
                page.mouse.move(*key_centre(page, label), steps=8)
            page.mouse.up()
            assert wait_for_strip(page, TYPED + " sky")[0] == ("sky", "prediction")
            assert page.input_value("#text") == TYPED + " sky"
            assert page.evaluate("document.activeElement.id") == "text"
            browser.close()


def write_screenshot(checkpoint: str, text: str, out: Path) -> None:
    """docs/serve.md's picture: the page, keys included, after typing `text` with this checkpoint."""
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT / "tests"))
    from test_serve import served

    with served(checkpoint) as (_, url):
        with sync_playwright() as playwright:
            browser, page = open_page(playwright, url, height=700)
            type_and_wait(page, text)
            page.screenshot(path=str(out))
            browser.close()


if __name__ == "__main__":
    write_screenshot(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "The game 's story is set in the ",
                     ROOT / "docs" / "serve.png")
    print(f"wrote {ROOT / 'docs' / 'serve.png'}")
