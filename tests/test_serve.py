"""`lm serve` through an HTTP client: every endpoint against the library, sessions, streaming, bad input."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

import lm
from cli import cli
from lm.errors import ConfigError
from lm.suggest.sampler import GenerationConfig, generate
from lm.serve import ServeSettings, create_app
from lm.suggest.keyboard import Keyboard
from lm.serve.sessions import SessionStore, session_bytes, session_limit
from lm.suggest.engine import Suggester

ROOT = Path(__file__).resolve().parents[1]
CLOUDS = "the clouds are in the "
needs_proc = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the server's processes from Linux /proc")
TEXTS = [CLOUDS, CLOUDS + "s", CLOUDS.rstrip(), "", "the cat sees the ball in the garden .\nthe cl", CLOUDS + "qzx"]


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoints) -> str:
    return str(tiny_checkpoints("char"))


@pytest.fixture(scope="module")
def reference(checkpoint) -> Suggester:
    """The library on its own copy of the model: what the server must answer."""
    return Suggester(lm.load(checkpoint).backend, lm.load(checkpoint).tokenizer, lexicon=lm.Lexicon.load(checkpoint))


@pytest.fixture(scope="module")
def keyboard(checkpoint, reference) -> Keyboard:
    """The library's keyboard over the reference suggester: what /suggest answers."""
    return Keyboard(reference, lm.Lexicon.load(checkpoint))


def library(keyboard: Keyboard, text: str, k: int | None = None) -> list[dict]:
    """The library's strip for a text, each suggestion for the text as sent (as lm suggest --json gives it)."""
    strip = keyboard.suggest(text, k)
    return [s.to_dict() for s in strip.as_typed(text)]


def serve(checkpoint: str, **settings) -> TestClient:
    loaded = lm.load(checkpoint)
    model, tokenizer = loaded.backend, loaded.tokenizer
    app = create_app(model, tokenizer, ServeSettings(**settings), lm.Lexicon.load(checkpoint))  # as lm serve loads it
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(checkpoint):
    with serve(checkpoint) as client:
        yield client


def as_dicts(suggestions) -> list[dict]:
    return [s.to_dict() for s in suggestions]


def test_health_and_info(client, checkpoint):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    saved = json.loads((Path(checkpoint) / "config.json").read_text())
    assert info["model"] == saved["model"]
    assert info["tokenizer"] == {"kind": "char", "vocab_size": saved["model"]["vocab_size"]}
    assert info["limits"]["k"] == 20 and info["limits"]["body_bytes"] == 1_048_576


@pytest.mark.parametrize("text", TEXTS)
def test_suggest_gives_the_library_suggestions(client, keyboard, text):
    expected = library(keyboard, text, 4)
    by_get = client.get("/suggest", params={"text": text, "k": 4})
    start = time.perf_counter()
    by_post = client.post("/suggest", json={"text": text, "k": 4})
    round_trip_ms = (time.perf_counter() - start) * 1000
    assert by_get.status_code == by_post.status_code == 200
    assert by_get.json()["suggestions"] == expected
    assert by_post.json()["suggestions"] == expected
    assert 0 < by_post.json()["elapsed_ms"] <= round_trip_ms  # the server's own time, in milliseconds


def test_suggest_equals_lm_suggest_json(checkpoint):
    """The CLI's default int8 model, served: the same words, probabilities, completions and slots,
    a correction and a fixed slip included (one engine behind both)."""
    loaded = lm.load(checkpoint, int8=True)
    model, tokenizer = loaded.backend, loaded.tokenizer
    with TestClient(create_app(model, tokenizer, lexicon=lm.Lexicon.load(checkpoint))) as client:
        for text in (CLOUDS, CLOUDS + "s", "the clouds are in teh ", "the clouds are in teh"):
            result = CliRunner().invoke(cli, ["suggest", text, "-c", checkpoint, "--json"])
            assert result.exit_code == 0, result.output
            assert client.post("/suggest", json={"text": text}).json()["suggestions"] == json.loads(result.stdout)


def test_a_long_text_is_read_whole(client, keyboard):
    text = "the cat sees the ball in the garden .\n" * 600 + CLOUDS  # 23 kB, many read chunks
    assert client.post("/suggest", json={"text": text}).json()["suggestions"] == library(keyboard, text)


def test_a_session_follows_typing_and_editing(client, keyboard):
    """Keystrokes, deletions and an edit in the middle all give what a fresh read gives."""
    typed = "the clouds are in the sky .\nmy friend sees"
    texts = [typed[:n] for n in range(1, len(typed) + 1)]
    texts += [typed[:-3], typed[:-3] + "es", typed.replace("clouds", "birds"), typed.replace("clouds", "birds") + " a"]
    for text in texts:
        answer = client.post("/suggest", json={"text": text, "session": "typist-1"}).json()
        assert answer["suggestions"] == library(keyboard, text), text


def count_tokens_read(model) -> list[int]:
    """A list that grows by the number of token ids each model call embeds."""
    read: list[int] = []
    model.embedding.register_forward_pre_hook(lambda module, args: read.append(args[0].numel()))
    return read


def test_a_session_keystroke_reads_one_word_not_the_text(tiny_checkpoints):
    checkpoint = str(tiny_checkpoints("word"))
    loaded = lm.load(checkpoint)
    model, tokenizer = loaded.model, loaded.tokenizer
    read = count_tokens_read(model)
    text = "the cat sees the ball in the garden .\n" * 20 + "the clouds are in"
    with TestClient(create_app(model, tokenizer, lexicon=lm.Lexicon.load(checkpoint))) as client:
        for session in ("slow", None):
            client.post("/suggest", json={"text": text, "session": session})
            read.clear()
            answer = client.post("/suggest", json={"text": text + " t", "session": session}).json()
            assert answer["suggestions"] == as_dicts(Suggester(lm.load(checkpoint, backend="torch").backend, tokenizer, lexicon=lm.Lexicon.load(checkpoint)).suggest(text + " t"))
            if session:
                assert sum(read) <= 2  # the word "in" and at most the start
            else:
                assert sum(read) > 160  # without a session every request reads the whole text


def test_sessions_are_bounded_least_recently_used_first(checkpoint):
    with serve(checkpoint, max_sessions=3) as client:
        store = client.app.state.service.sessions
        for name in ("a", "b", "c"):
            client.post("/suggest", json={"text": "the ", "session": name})
        client.post("/suggest", json={"text": "the c", "session": "a"})  # a is now the most recent
        client.post("/suggest", json={"text": "the ", "session": "d"})
        assert list(store._entries) == ["c", "a", "d"]
        for n in range(50):
            client.post("/suggest", json={"text": "the ", "session": f"many-{n}"})
        assert len(store) == 3 and client.get("/info").json()["sessions"] == 3


def test_idle_sessions_are_dropped(keyboard):
    now = [0.0]
    store = SessionStore(keyboard, max_sessions=10, idle_seconds=60, clock=lambda: now[0])
    store.suggest("old", "the ", 3)
    now[0] = 30.0
    store.suggest("recent", "the ", 3)
    now[0] = 61.0
    store.suggest("new", "the ", 3)
    assert "old" not in store and "recent" in store and "new" in store


def test_the_memory_budget_lowers_the_session_count(reference):
    one = session_bytes(reference)
    assert session_limit(reference, 1000, 10 * one) == 10
    assert session_limit(reference, 5, 10 * one) == 5
    assert session_limit(reference, 1000, 0) == 1


def test_each_server_process_keeps_its_share_of_the_sessions(checkpoint, reference):
    loaded = lm.load(checkpoint)
    model, tokenizer = loaded.backend, loaded.tokenizer
    app = create_app(model, tokenizer, ServeSettings(processes=3, max_sessions=10))
    assert app.state.service.sessions.max_sessions == 4  # 10 over 3 processes, rounded up
    tight = ServeSettings(processes=2, max_sessions=1000, session_memory=1)  # 1 MB: half each
    expected = session_limit(reference, 1000, 2**20 // 2)
    assert create_app(model, tokenizer, tight).state.service.sessions.max_sessions == expected


def library_generation(checkpoint, prompt: str, **config):
    generation = generate(lm.load(checkpoint).backend, lm.load(checkpoint).tokenizer, prompt, GenerationConfig(**config))
    samples = [{"text": s.text, "finish_reason": s.finish_reason, "tokens": len(s.ids)} for s in generation.run()]
    return {**samples[0], "seed": generation.seed, "samples": samples}


def test_generate_gives_the_library_generation(client, checkpoint):
    request = {"prompt": "the clouds", "max_tokens": 40, "temperature": 0.9, "top_k": 10, "top_p": 0.95, "seed": 7}
    answer = client.post("/generate", json=request)
    assert answer.status_code == 200
    expected = library_generation(checkpoint, **request)
    assert answer.json() == expected and expected["finish_reason"] == "max_tokens"
    largest = {**request, "seed": 2**64 - 1}  # seeds drawn by the server are 64-bit: they replay
    assert client.post("/generate", json=largest).json() == library_generation(checkpoint, **largest)


def test_generate_stops_at_a_stop_string(client, checkpoint):
    request = {"prompt": "the clouds are in the", "max_tokens": 100, "temperature": 0, "stop": [" ."]}
    answer = client.post("/generate", json=request).json()
    assert answer["finish_reason"] == "stop" and answer["text"].endswith(" .")
    assert answer == library_generation(checkpoint, **{**request, "stop": (" .",), "seed": answer["seed"]})


def read_events(response) -> list[str]:
    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.text.split("\n\n")
    assert events[-1] == ""
    assert all(e.startswith("data: ") for e in events[:-1])
    return [e[len("data: "):] for e in events[:-1]]


def test_generate_streams_one_event_per_piece_then_the_finish_reason(client, checkpoint):
    request = {"prompt": "my friend", "max_tokens": 30, "seed": 3}
    expected = library_generation(checkpoint, **request)
    events = read_events(client.post("/generate", json={**request, "stream": True}))
    assert events[-1] == "[DONE]"
    pieces = [json.loads(e) for e in events[:-2]]
    assert all(p["finish_reason"] is None and p["text"] for p in pieces)
    assert "".join(p["text"] for p in pieces) == expected["text"]
    assert len(pieces) == expected["tokens"]  # a char model: one piece per token
    last = {key: expected[key] for key in ("finish_reason", "tokens", "seed")}
    assert json.loads(events[-2]) == {"index": 0, "text": "", **last}


BAD_REQUESTS = [
    ("post", "/suggest", {"text": "the", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
    ("post", "/suggest", {"text": "the", "k": 21}, 422, "k: Input should be less than or equal to 20"),
    ("post", "/suggest", {"text": "the", "k": "three"}, 422, "k: Input should be a valid integer, unable to parse string as an integer"),
    ("post", "/suggest", {"text": 5}, 422, "text: Input should be a valid string"),
    ("post", "/suggest", {"text": "the", "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
    ("post", "/suggest", ["the"], 422, "body: Input should be a valid dictionary or object to extract fields from"),
    ("post", "/suggest", {"text": "the", "session": "../../etc/passwd"}, 422, "session: String should match pattern '^[A-Za-z0-9_.:-]{1,128}$'"),
    ("get", "/suggest?text=the&k=3&colour=red", None, 422, "colour: Extra inputs are not permitted"),
    ("get", "/suggest?k=-1", None, 422, "k: Input should be greater than or equal to 1"),
    ("post", "/generate", {"prompt": "a", "max_tokens": 0}, 422, "max_tokens: Input should be greater than or equal to 1"),
    ("post", "/generate", {"prompt": "a", "max_tokens": 100_000}, 422, "max_tokens: Input should be less than or equal to 2048"),
    ("post", "/generate", {"prompt": "a", "temperature": -1}, 422, "temperature: Input should be greater than or equal to 0"),
    ("post", "/generate", {"prompt": "a", "top_p": 0}, 422, "top_p: Input should be greater than 0"),
    ("post", "/generate", {"prompt": "a", "seed": -5}, 422, "seed: Input should be greater than or equal to 0"),
    ("post", "/generate", {"prompt": "a", "seed": 2**64}, 422, "seed: Input should be less than or equal to 18446744073709551615"),
    ("post", "/generate", {"prompt": "a", "stop": [""]}, 422, "stop.0: String should have at least 1 character"),
    ("post", "/generate", {"prompt": "a", "stop": ["x"] * 9}, 422, "stop: List should have at most 8 items after validation, not 9"),
    ("post", "/generate", {"prompt": "a", "stream": "maybe"}, 422, "stream: Input should be a valid boolean, unable to interpret input"),
    ("post", "/generate", {"prompt": "a", "checkpoint": "/etc"}, 422, "checkpoint: Extra inputs are not permitted"),
    ("post", "/generate", {"prompt": "a", "max_tokens": 0, "top_p": 2, "top_k": -1, "seed": -1}, 422,
     "max_tokens: Input should be greater than or equal to 1; top_k: Input should be greater than or equal to 0; "
     "top_p: Input should be less than or equal to 1 (and 1 more)"),
]


@pytest.mark.parametrize("method,path,body,status,detail", BAD_REQUESTS)
def test_bad_input_gets_one_line_that_names_the_field(client, method, path, body, status, detail):
    response = client.request(method.upper(), path, json=body)
    assert (response.status_code, response.json()) == (status, {"detail": detail})


@pytest.mark.parametrize("body,detail", [
    (b'{"text": "the", ', "malformed JSON (Expecting property name enclosed in double quotes) at character 16"),
    (b"\xff\xfe", "malformed JSON (Expecting value) at character 0"),
])
def test_malformed_json_is_a_422(client, body, detail):
    response = client.post("/suggest", content=body, headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (422, {"detail": detail})


def test_bodies_over_the_limit_get_413_declared_or_chunked(checkpoint):
    with serve(checkpoint, max_body=1000) as client:
        declared = client.post("/suggest", json={"text": "a" * 1000})
        chunked = client.post("/suggest", content=iter([b'{"text": "', b"a" * 600, b"a" * 600, b'"}']),
                              headers={"Content-Type": "application/json"})
        fits = client.post("/suggest", json={"text": "a" * 900})
    for response in (declared, chunked):
        assert (response.status_code, response.json()) == (413, {"detail": "request body over 1,000 bytes — send a shorter text"})
    assert fits.status_code == 200


def test_the_default_limit_is_one_megabyte(client):
    too_big = client.post("/generate", json={"prompt": "a" * 1_048_576})
    assert too_big.status_code == 413


def test_library_errors_are_400_and_crashes_500_without_a_traceback(checkpoint):
    with serve(checkpoint) as client:
        service = client.app.state.service

        def refuse(*args):
            raise ConfigError("k must be a positive integer, not 0 — ask for at least one suggestion\nsecond line")

        def crash(*args):
            raise RuntimeError("secret internals\n  File '/srv/model.py', line 1")

        service.suggest = refuse
        refused = client.post("/suggest", json={"text": "the"})
        service.suggest = crash
        crashed = client.post("/suggest", json={"text": "the"})
        health = client.get("/health")
    assert (refused.status_code, refused.json()) == (400, {"detail": "k must be a positive integer, not 0 — ask for at least one suggestion"})
    assert (crashed.status_code, crashed.json()) == (500, {"detail": "internal error (RuntimeError); the server log has the details"})
    assert "secret" not in crashed.text and health.status_code == 200


def test_an_api_key_guards_everything_but_health_and_the_page(checkpoint):
    with serve(checkpoint, api_key="s3cret") as client:
        assert client.get("/health").status_code == 200
        assert client.get("/").status_code == 200 and client.get("/static/app.js").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            for method, path in (("GET", "/info"), ("POST", "/suggest"), ("POST", "/generate"), ("GET", "/nowhere")):
                response = client.request(method, path, json={}, headers=headers)
                assert response.status_code == 401, (method, path, headers)
        good = {"Authorization": "Bearer s3cret"}
        assert client.post("/suggest", json={"text": "the "}, headers=good).status_code == 200
        assert client.get("/info", headers=good).status_code == 200


def test_the_page_and_its_files_are_served_and_nothing_else(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="strip"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/style.css").status_code == 200
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/../../../pyproject.toml", "/docs"):
        assert client.get(path).status_code == 404, path


def test_bad_settings_are_one_line_errors(checkpoint):
    loaded = lm.load(checkpoint)
    model, tokenizer = loaded.backend, loaded.tokenizer
    with pytest.raises(ConfigError, match=r"^--workers must be a positive integer, not 0$"):
        create_app(model, tokenizer, ServeSettings(workers=0))
    with pytest.raises(ConfigError, match=r"^--api-key must not be empty"):
        create_app(model, tokenizer, ServeSettings(api_key=" "))


def test_a_taken_port_is_one_error_line(checkpoint):
    from lm.serve import listen

    taken = listen("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        result = CliRunner().invoke(cli, ["serve", "-c", checkpoint, "--port", str(port), "--host", "0.0.0.0"])
    finally:
        taken.close()
    assert result.exit_code == 1
    assert result.stderr.startswith("Warning: listening on 0.0.0.0 lets other machines reach the model; consider --api-key\n")
    assert re.search(rf"^Error: cannot listen on 0\.0\.0\.0:{port} \(.+\) — pick another --port or --host$",
                     result.stderr, re.M), result.stderr


def test_a_port_another_server_group_holds_is_taken_too():
    from lm.serve import listen

    from lm.serve.server import listening_copy

    group = listen("127.0.0.1", 0, processes=2)  # bound with SO_REUSEPORT, as `lm serve` holds it
    serving = listening_copy(group)  # and one of its server processes
    try:
        with pytest.raises(ConfigError, match=r"^cannot listen on 127\.0\.0\.1:\d+ "):
            listen("127.0.0.1", group.getsockname()[1], processes=2)  # would otherwise join its group
    finally:
        serving.close()
        group.close()


@contextmanager
def served(checkpoint: str, *args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`lm serve` as a subprocess on a free loopback port: it and its URL, stopped on the way out
    if the test left it running (SIGTERM, then SIGKILL after 20 s)."""
    process = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", "-c", checkpoint, "--port", "0", *args],
                               cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        line = first_line(process, seconds=120)  # printed once the server serves
        match = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
        if not match:
            pytest.fail(f"lm serve did not start: {line}{server_log(process)}")
        yield process, match.group(1)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def first_line(process: subprocess.Popen, seconds: float) -> str:
    """The first line a server writes to stderr, or "" if none comes within `seconds`."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stderr.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    return lines[0] if lines else ""


def server_log(process: subprocess.Popen) -> str:
    """What a server printed, once it is stopped: for a failing test's message."""
    process.kill()
    return process.stderr.read()


def server_children(pid: int) -> set[int]:
    """The live server processes forked by `pid` (Linux /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(c) for c in children if Path(f"/proc/{c}/stat").read_text().split()[2] != "Z"}


def wait_for_children(pid: int, count: int, gone: frozenset = frozenset(), seconds: float = 20) -> set[int]:
    """The server's processes once `count` of them (none of `gone`) run, or as they are after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(server_children(pid) - gone) < count:
        time.sleep(0.05)
    return server_children(pid)


@needs_proc
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("processes", [1, 2])
def test_the_server_process_answers_and_stops_cleanly(checkpoint, keyboard, stop_signal, processes):
    # One process with two model threads, or two processes. A typist on one keep-alive
    # connection stays with one process; a typist that opens a connection per keystroke has its
    # session moved between the processes. Every one gets the library's answers.
    with served(checkpoint, "--fp32", "--processes", str(processes), "--workers", "2") as (process, url):
        assert len(wait_for_children(process.pid, processes, seconds=0 if processes == 1 else 20)) == (
            0 if processes == 1 else processes)
        assert httpx.get(f"{url}/health", timeout=30).json() == {"status": "ok"}
        answers: dict[str, list] = {}

        def typist(n: int) -> None:  # concurrent sessions, each typing its own text
            text = ["the cat sees", "my friend likes", "our teacher finds", "the birds want"][n % 4] + " the "
            keep_alive = n % 2 == 0
            with httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_keepalive_connections=keep_alive)) as http:
                for end in range(1, len(text) + 1):
                    answer = http.post("/suggest", json={"text": text[:end], "session": f"t{n}"}).json()
            answers[text + str(n)] = (text, answer["suggestions"])

        threads = [threading.Thread(target=typist, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(answers) == 6, server_log(process)
        for text, suggestions in answers.values():
            assert suggestions == library(keyboard, text)
        children = server_children(process.pid)
        process.send_signal(stop_signal)
        assert process.wait(timeout=20) == 0
        assert "Traceback" not in process.stderr.read()
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]  # none left behind


def test_the_server_keeps_what_it_loaded_out_of_the_collectors_passes(monkeypatch):
    import gc
    import lm.serve.server as server

    frozen: list[int] = []
    monkeypatch.setattr(server, "_serve", lambda app, sock, started: frozen.append(gc.get_freeze_count()))
    try:
        assert server.run(None, None, 1) == 0
    finally:
        gc.unfreeze()
    assert frozen and frozen[0] > 10_000  # modules, the app and the model: not walked during requests


@needs_proc
@pytest.mark.parametrize("processes", [1, 2])
def test_the_address_is_printed_once_every_server_process_serves(checkpoint, processes):
    with served(checkpoint, "--fp32", "--processes", str(processes)) as (process, url):
        # No client that reads the line is refused, and a stop that comes at once is not lost.
        assert listening_sockets(int(url.rsplit(":", 1)[1])) == processes
        process.terminate()
        assert process.wait(timeout=20) == 0


@needs_proc
def test_a_server_process_that_dies_is_replaced(checkpoint):
    with served(checkpoint, "--fp32", "--processes", "2") as (process, url):
        first = wait_for_children(process.pid, 2)
        assert len(first) == 2
        os.kill(min(first), signal.SIGKILL)
        replaced = wait_for_children(process.pid, 2, gone=frozenset({min(first)}))
        assert len(replaced) == 2 and min(first) not in replaced
        assert httpx.post(f"{url}/suggest", json={"text": "the "}, timeout=30).status_code == 200
        # 16 connections opened at once: the kernel spreads them over both processes (on one
        # shared socket, the process that woke first took all of them).
        port = int(url.rsplit(":", 1)[1])
        connections = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(16)]
        answered_by = {info_on(connection)["process"] for connection in connections}
        for connection in connections:
            connection.close()
        assert answered_by == replaced  # all 16 on one process: 1 chance in 30,000
        assert listening_sockets(port) == 2  # one each, which is what makes the kernel spread them
        process.terminate()
        assert process.wait(timeout=20) == 0


@needs_proc
def test_the_server_processes_end_when_the_supervisor_is_killed(checkpoint):
    children: set[int] = set()
    try:
        with served(checkpoint, "--fp32", "--processes", "2") as (process, url):
            children = wait_for_children(process.pid, 2)
            assert len(children) == 2
            process.kill()  # SIGKILL: the supervisor cannot pass anything on
            process.wait(timeout=20)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in children):
                time.sleep(0.05)
            assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
    finally:
        for pid in children:  # orphans, if the test failed
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on this port (Linux /proc/net/tcp; state 0A is LISTEN)."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return sum(1 for row in rows if row[1].endswith(f":{port:04X}") and row[3] == "0A")


def info_on(connection: socket.socket) -> dict:
    """GET /info over an open connection."""
    connection.sendall(b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def test_a_gpu_server_is_one_process(checkpoint):
    from lm.serve.server import default_processes

    assert default_processes("cuda") == 1
    assert default_processes("cpu") == len(os.sched_getaffinity(0))


def test_freed_memory_is_handed_back_every_so_many_requests(checkpoint, monkeypatch):
    import lm.serve.service

    trims = []
    monkeypatch.setattr(lm.serve.service, "TRIM_EVERY", 3)
    monkeypatch.setattr(lm.serve.service, "release_memory", lambda: trims.append(1))
    with serve(checkpoint) as client:
        for n in range(7):
            assert client.post("/suggest", json={"text": "the ", "session": f"s{n}"}).status_code == 200
    assert len(trims) == 2


def test_a_finished_typo_comes_back_corrected_and_a_session_takes_the_undo(client):
    answer = client.post("/suggest", json={"text": "the clouds are in teh ", "session": "fix"}).json()
    assert answer["correction"] == {"typed": "teh", "word": "the", "reason": "corrected"}
    assert answer["text"] == "the clouds are in the "
    slots = [(s["word"], s["slot"], s["delete"], s["completion"]) for s in answer["suggestions"][:2]]
    assert slots == [("teh", "typed", 0, ""), ("the", "correction", 4, "the ")]  # for the text as sent
    # The page puts the typed word back on a backspace; the session keeps it from then on.
    client.post("/suggest", json={"text": "the clouds are in teh", "session": "fix"})
    again = client.post("/suggest", json={"text": "the clouds are in teh ", "session": "fix"}).json()
    assert again["correction"] is None and again["text"] == "the clouds are in teh "
    off = client.post("/suggest", json={"text": "the clouds are in teh ", "correct": False}).json()
    assert off["correction"] is None and off["text"] == "the clouds are in teh "
    assert all(s["slot"] == "prediction" for s in off["suggestions"])


def test_a_swipe_over_the_layouts_keys_gives_the_word(client):
    layout = client.get("/layout").json()
    assert layout["forgiving"] is True and layout["name"] == "qwerty-en-us"
    centre = {key["key"]: (key["x"], key["y"]) for key in layout["keys"]}
    for session in (None, "swiper"):
        answer = client.post("/swipe", json={"text": "the clouds are in the", "session": session,
                                             "points": [centre[ch] for ch in "sky"]}).json()
        assert (answer["suggestions"][0]["word"], answer["suggestions"][0]["completion"]) == ("sky", " sky")
    empty = client.post("/swipe", json={"text": "", "points": []})
    assert empty.status_code == 422 and empty.json()["detail"].startswith("points:")
    far = client.post("/swipe", json={"points": [[1e9, 0]]})
    assert far.status_code == 422


def test_the_servers_keyboard_settings_reach_the_keyboard(checkpoint):
    loaded = lm.load(checkpoint)
    settings = ServeSettings(layout="qwertz-de", words=("teh",))
    with TestClient(create_app(loaded.backend, loaded.tokenizer, settings, lm.Lexicon.load(checkpoint))) as client:
        assert client.get("/layout").json()["name"] == "qwertz-de"
        answer = client.post("/suggest", json={"text": "the clouds are in teh "}).json()
        assert answer["correction"] is None and answer["text"] == "the clouds are in teh "  # a user word
    off = ServeSettings(correct=False)
    with TestClient(create_app(loaded.backend, loaded.tokenizer, off, lm.Lexicon.load(checkpoint))) as client:
        assert client.get("/layout").json()["forgiving"] is False
        assert client.post("/suggest", json={"text": "the clouds are in teh "}).json()["correction"] is None
    with pytest.raises(lm.ConfigError, match="layout"):
        create_app(loaded.backend, loaded.tokenizer, ServeSettings(layout="dvorak"), lm.Lexicon.load(checkpoint))
