"""`lm export --web`: the static page in a real headless browser, against the Python engine.

The page runs the model with onnxruntime-web and the suggestion rule in JavaScript; the
reference is `Suggester.suggest` over the same checkpoint in Python. The browser is Debian's
chromium driven by Playwright, as in tests/test_serve_page.py. onnxruntime-web comes from the
npm registry once and stays in ~/.cache/lm (tests skip, saying so, where it cannot be fetched).
"""
from __future__ import annotations

import functools
import io
import json
import re
import tarfile
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import lm  # noqa: E402
from cli import cli  # noqa: E402
from lm.errors import ExportError  # noqa: E402
from lm.export import web_onnxruntime  # noqa: E402
from lm.export.web import INFO_FILE, export_web  # noqa: E402
from lm.suggest.engine import Suggester  # noqa: E402
from test_serve_page import CHROMIUM, CHROMIUM_ARGS, WAIT_MS  # noqa: E402

TYPED = "the clouds are in the"
# Sentence starts, half-typed words, capitals, a word typed whole, punctuation, a new line, nothing that fits.
TEXTS = ["", "the c", "The", "T", "my friend s", "a dog,", "her sister likes the gr", "the birds sees the sea .\nthe ",
         "the clouds are in the ", "x", "  "]
browser_only = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary: apt-get install chromium (.ci/run does)")


@pytest.fixture(scope="module")
def web_exports(tiny_checkpoints, tmp_path_factory):
    """(kind, int8) -> folder of the tiny model's web export (built on first use)."""
    built = {}

    def get(kind: str, int8: bool = False) -> Path:
        if (kind, int8) not in built:
            out = tmp_path_factory.mktemp(f"web-{kind}") / ("int8" if int8 else "fp32")
            try:
                built[kind, int8] = export_web(tiny_checkpoints(kind), out, int8=int8).folder
            except ExportError as e:
                if "cannot fetch" in str(e):
                    pytest.skip(f"onnxruntime-web is not cached and the npm registry is out of reach: {e}")
                raise
        return built[kind, int8]

    return get


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def static_server(folder: Path):
    """A static file server of `folder` on a free loopback port; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright: pip install playwright")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def opened(browser, folder: Path):
    """The page of a web export, served and loaded (the model read): yields the page and the
    requests it makes from then on."""
    with static_server(folder) as url:
        page = browser.new_page(viewport={"width": 760, "height": 420})
        page.set_default_timeout(WAIT_MS)
        errors = []
        page.on("pageerror", lambda error: errors.append(error))
        page.goto(url)
        page.wait_for_selector("body[data-ready], body[data-failed]")
        assert page.get_attribute("body", "data-ready"), page.text_content("#status")
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        try:
            yield page, requests
            assert not errors, errors
        finally:
            page.close()


def shown(page, text: str) -> list[str]:
    """Wait for the strip to answer `text`; returns its words."""
    page.wait_for_selector(f"#strip[data-text={text!r}]:not(.stale)")
    return [slot.evaluate("s => s.firstChild.textContent") for slot in page.locator(".suggestion:not([disabled])").all()]


def page_suggest(page, text: str) -> list[dict]:
    """The strip the page's engine computes for `text` in a fresh session."""
    return page.evaluate("async text => window.lmEngine.session().suggest(text)", text)


@browser_only
@pytest.mark.parametrize("kind", ["char", "word"])
def test_the_page_suggests_what_the_python_engine_suggests(kind, tiny_checkpoints, web_exports, browser):
    suggester = Suggester.load(lm.load(tiny_checkpoints(kind)))
    with opened(browser, web_exports(kind)) as (page, requests):
        page.locator("#text").press_sequentially(TYPED, delay=5)  # one keystroke at a time: the session's state carried
        assert shown(page, TYPED) == [s.word for s in suggester.suggest(TYPED)]
        for _ in range(6):  # back past "in": the state read after it is dropped
            page.keyboard.press("Backspace")
        assert shown(page, TYPED[:-6]) == [s.word for s in suggester.suggest(TYPED[:-6])]
        for text in TEXTS:
            expected = suggester.suggest(text)
            found = page_suggest(page, text)
            assert [(s["word"], s["completion"]) for s in found] == [(s.word, s.completion) for s in expected], text
            assert [s["probability"] for s in found] == pytest.approx([s.probability for s in expected], abs=1e-4), text
        assert requests == []  # everything was computed in the page


@browser_only
def test_a_click_inserts_the_suggestion_and_nothing_leaves_the_page(tiny_checkpoints, web_exports, browser):
    expected = Suggester.load(lm.load(tiny_checkpoints("char"))).suggest(TYPED + " ")
    with opened(browser, web_exports("char")) as (page, requests):
        page.locator("#text").press_sequentially(TYPED + " ", delay=5)
        assert shown(page, TYPED + " ")[:2] == [s.word for s in expected[:2]]
        page.locator(".suggestion").nth(1).click()
        inserted = TYPED + " " + expected[1].completion + " "
        shown(page, inserted)  # the strip follows the inserted word
        assert page.input_value("#text") == inserted
        assert page.evaluate("document.activeElement.id") == "text"
        page.keyboard.press("Tab")  # Tab inserts the first suggestion
        assert page.input_value("#text").startswith(inserted) and len(page.input_value("#text")) > len(inserted)
        assert "ms in this page" in page.text_content("#status")
        assert requests == []


@browser_only
def test_the_int8_page_suggests_lexicon_words(tiny_checkpoints, web_exports, browser):
    folder = web_exports("char", int8=True)
    info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    assert info["model"]["weights"] == "int8"
    lexicon = lm.Lexicon.load(tiny_checkpoints("char"))
    with opened(browser, folder) as (page, requests):
        page.locator("#text").press_sequentially("the c", delay=5)
        words = shown(page, "the c")
        assert len(words) == 3 and all(w.startswith("c") and lexicon.allows(w) for w in words)
        assert requests == []


@browser_only
def test_a_gru_with_an_adaptive_softmax_runs_in_the_page_as_fp32(tiny_checkpoints, browser, tmp_path):
    """The state is h alone and the logits are log-probabilities; ONNX Runtime has no int8 GRU, so
    --web's default weights are fp32."""
    import torch

    from lm.checkpoint.store import load_checkpoint, save_checkpoint
    from lm.model.config import ModelConfig
    from lm.model.network import LanguageModel

    tokenizer = load_checkpoint(tiny_checkpoints("word")).tokenizer
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, cell="gru", layers=2, hidden=48, emb=32, dropout=0.0,
                         softmax="adaptive", cutoffs=[10, 20])
    checkpoint = save_checkpoint(tmp_path / "gru", LanguageModel(config), tokenizer, {})
    folder = export_web(checkpoint, tmp_path / "site").folder
    assert json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))["model"]["weights"] == "fp32"
    suggester = Suggester.load(lm.load(checkpoint))
    with opened(browser, folder) as (page, _):
        for text in [TYPED, "the c", "T"]:
            assert [s["word"] for s in page_suggest(page, text)] == [s.word for s in suggester.suggest(text)], text


@browser_only
def test_the_pages_text_rules_are_pythons(tiny_checkpoints, web_exports, browser):
    """Character classes, case folding, the order of strings and where a typed text backs off
    to, in JavaScript against lm's Python on strings where the two languages differ."""
    from lm.data.lexicon import WORD
    from lm.suggest.session import _segment_ends
    from lm.suggest.typed import split_typed

    texts = ["Straße", "İstanbul ΣΑΣ", "naïve café\u00a0x", "a\x1cb\u0085c\ufeffd", "emoji 😀 wörd", "don't (say", "hi,th",
             "x" * 70, "end. ", "\u3000new", "tab\there"]
    strings = ["b", "a", "\uffff", "😀", "\ue000", "ab", "a\U0001f600", "a\uffff"]
    script = """async ([texts, strings]) => {
        const t = await import("./text.js");
        return {
            folded: texts.map(t.casefold),
            typed: texts.map((s) => [false, true].map((w) => { const x = t.splitTyped(s, w); return [x.contextEnd, x.lead, x.partial, x.prefix, x.sentenceStart]; })),
            segments: texts.map((s) => t.segmentEnds(s, 0, s.length)),
            words: texts.map(t.words),
            sorted: [...strings].sort(t.compare),
        };
    }"""
    with opened(browser, web_exports("char")) as (page, _):
        found = page.evaluate(script, [texts, strings])

    def utf16(text: str, end: int) -> int:  # a Python index as JavaScript counts it
        return len(text[:end].encode("utf-16-le")) // 2

    assert found["folded"] == [s.casefold() for s in texts]
    typed = [[[utf16(s, x.context_end), x.lead, x.partial, x.prefix, x.sentence_start]
              for x in (split_typed(s), split_typed(s, by_whitespace=True))] for s in texts]
    assert found["typed"] == typed
    assert found["segments"] == [[utf16(s, e) for e in _segment_ends(s, 0, len(s))] for s in texts]
    assert found["words"] == [WORD.findall(s) for s in texts]
    assert found["sorted"] == sorted(strings)


# --- the folder, the package and the command line (no browser)

def test_the_folder_holds_the_page_the_model_and_onnxruntime_web(tiny_checkpoints, web_exports):
    folder = web_exports("word")
    info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    tokenizer = lm.load(tiny_checkpoints("word")).tokenizer
    assert info["tokenizer"]["pieces"] == tokenizer.pieces
    words = [tokenizer.pieces[i] for i in info["tokenizer"]["sorted_ids"]]
    assert words == sorted(set(tokenizer.pieces) - {"<unk>", "<eos>"})  # Python's order, specials left out
    assert info["lexicon"] is None  # word models offer their vocabulary
    assert info["text"]["spaces"] == "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
    names = {p.name for p in folder.iterdir()}
    assert {"index.html", "lm.js", "model.onnx", "ort.wasm.min.mjs", "ort-wasm-simd-threaded.wasm"} <= names
    html = (folder / "index.html").read_text(encoding="utf-8")
    assert "http" not in html.replace('content="width', "")  # nothing is loaded from elsewhere


def test_a_sentencepiece_model_is_refused_with_the_reason(tiny_checkpoints, tmp_path):
    fake = tmp_path / "unigram-model"
    fake.mkdir()
    config = json.loads((tiny_checkpoints("char") / "config.json").read_text(encoding="utf-8"))
    config["tokenizer"]["kind"] = "unigram"
    (fake / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ExportError, match="--web supports char and word models, and .* is a unigram model"):
        export_web(fake, tmp_path / "site")
    assert not (tmp_path / "site").exists()


def cached_package() -> bytes:
    try:
        return web_onnxruntime._cached_tarball()
    except ExportError as e:
        pytest.skip(f"onnxruntime-web is not cached and the npm registry is out of reach: {e}")


def test_a_copy_of_onnxruntime_web_is_taken_when_genuine(tmp_path):
    tarball = cached_package()
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        tar.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    from_tarball = web_onnxruntime.onnxruntime_web_files(web_onnxruntime.cached_tarball_path())
    assert web_onnxruntime.onnxruntime_web_files(tmp_path / "package") == from_tarball
    assert set(from_tarball) == {"ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"}

    damaged = tmp_path / "damaged.tgz"
    damaged.write_bytes(tarball[:-1] + b"\0")
    with pytest.raises(ExportError, match=r"damaged.tgz is not onnxruntime-web 1\.31\.1 .* --onnxruntime-web"):
        web_onnxruntime.onnxruntime_web_files(damaged)
    package = json.loads((tmp_path / "package" / "package.json").read_text(encoding="utf-8"))
    (tmp_path / "package" / "package.json").write_text(json.dumps({**package, "version": "1.0.0"}), encoding="utf-8")
    with pytest.raises(ExportError, match="holds onnxruntime-web 1.0.0, not 1.31.1"):
        web_onnxruntime.onnxruntime_web_files(tmp_path / "package")
    with pytest.raises(ExportError, match="does not exist — pass the .tgz"):
        web_onnxruntime.onnxruntime_web_files(tmp_path / "missing.tgz")


def test_no_registry_and_no_copy_is_one_line_naming_the_flag(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing cached
    monkeypatch.delenv(web_onnxruntime.ENV, raising=False)
    monkeypatch.setattr(web_onnxruntime, "TARBALL_URL", "http://127.0.0.1:9/onnxruntime-web.tgz")  # refused at once
    with pytest.raises(ExportError) as caught:
        web_onnxruntime.onnxruntime_web_files()
    message = str(caught.value)
    assert message.startswith("cannot fetch onnxruntime-web 1.31.1 from the npm registry (")
    assert "pass --onnxruntime-web PATH" in message and "\n" not in message


def test_the_cli_writes_the_folder_and_refuses_what_does_not_fit(tiny_checkpoints, tmp_path):
    checkpoint = str(tiny_checkpoints("char"))
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(tmp_path / "site"), "-c", checkpoint, "--web"])
    assert result.exit_code == 0, result.output
    assert "Web page written to" in result.output and re.search(r"weights\s+│\s+int8\s", result.output)
    assert f"python -m http.server -d {tmp_path / 'site'} 8000" in result.output
    info = json.loads((tmp_path / "site" / INFO_FILE).read_text(encoding="utf-8"))
    assert info["model"]["weights"] == "int8"  # --web defaults to int8

    again = runner.invoke(cli, ["export", str(tmp_path / "site"), "-c", checkpoint, "--web"])
    assert again.exit_code == 1
    assert again.output == f"Error: {tmp_path / 'site'} already exists — pass --overwrite to replace it, or choose another folder\n"
    fp32 = runner.invoke(cli, ["export", str(tmp_path / "site"), "-c", checkpoint, "--web", "--fp32", "--overwrite"])
    assert fp32.exit_code == 0, fp32.output
    assert json.loads((tmp_path / "site" / INFO_FILE).read_text(encoding="utf-8"))["model"]["weights"] == "fp32"

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    other = runner.invoke(cli, ["export", str(tmp_path / "other"), "-c", checkpoint, "--web", "--overwrite"])
    assert other.exit_code == 1 and "is not an lm web export (it has no lm-web.json)" in other.output
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    lonely = runner.invoke(cli, ["export", str(tmp_path / "plain"), "-c", checkpoint, "--onnxruntime-web", "x.tgz"])
    assert lonely.exit_code == 2 and "--onnxruntime-web goes with --web" in lonely.output
