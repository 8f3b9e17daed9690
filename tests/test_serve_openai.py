"""`lm serve`'s conventions: the OpenAI routes through the openai client, /metrics, CORS, n on /generate."""
from __future__ import annotations

import json

import httpx
import openai
import pytest
import torch
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import lm
from lm.errors import ConfigError
from lm.serve import ServeSettings, create_app
from lm.suggest.sampler import GenerationConfig, generate
from test_serve import served

NAME = "tiny-char"
KEY = "s3cret"
ORIGIN = "https://page.example"
# OpenAI's sampling defaults, as lm's config: temperature 1, nucleus and top-k off, no repetition penalty.
OPENAI_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}


@pytest.fixture(scope="module")
def loaded(tiny_checkpoints):
    return lm.load(tiny_checkpoints("char"))


def serve(loaded, **settings) -> TestClient:
    app = create_app(loaded.model, loaded.tokenizer, ServeSettings(name=NAME, **settings))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def server(loaded) -> TestClient:
    return serve(loaded, api_key=KEY)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    """The openai client library, its requests answered by the app in this process."""
    return openai.OpenAI(base_url="http://testserver/v1", api_key=KEY, http_client=server, max_retries=0)


def library_texts(loaded, prompt: str, **config) -> list[tuple[str, str]]:
    """(text, lm's finish reason) of each sample the library draws."""
    generation = generate(loaded.model, loaded.tokenizer, prompt, GenerationConfig(**{**OPENAI_DEFAULTS, **config}))
    return [(sample.text, sample.finish_reason) for sample in generation.run()]


def test_the_openai_client_gets_the_librarys_completion(client, loaded):
    answer = client.completions.create(model=NAME, prompt="the clouds", max_tokens=30, temperature=0.9, seed=7)
    [(text, reason)] = library_texts(loaded, "the clouds", max_tokens=30, temperature=0.9, seed=7)
    assert (answer.choices[0].text, answer.choices[0].finish_reason, reason) == (text, "length", "max_tokens")
    assert answer.id.startswith("cmpl-") and answer.object == "text_completion" and answer.model == NAME
    prompt_tokens = len(loaded.tokenizer.encode("the clouds"))
    assert answer.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) == {
        "prompt_tokens": prompt_tokens, "completion_tokens": 30, "total_tokens": prompt_tokens + 30}


def test_several_prompts_get_n_choices_each_in_order(client, loaded):
    answer = client.completions.create(model=NAME, prompt=["the cat", "my friend"], n=2, max_tokens=12, seed=3)
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    expected = library_texts(loaded, "the cat", n=2, max_tokens=12, seed=3) + \
        library_texts(loaded, "my friend", n=2, max_tokens=12, seed=3)
    assert [c.text for c in answer.choices] == [text for text, _ in expected]
    assert answer.usage.completion_tokens == 48


def test_a_stop_string_ends_the_choice_and_is_left_out_streamed_or_not(client, loaded):
    request = {"model": NAME, "prompt": "the clouds are in the", "max_tokens": 100, "temperature": 0, "stop": " ."}
    [(text, reason)] = library_texts(loaded, "the clouds are in the", max_tokens=100, temperature=0, stop=(" .",))
    assert reason == "stop" and text.endswith(" .")  # lm keeps the stop string; OpenAI leaves it out
    answer = client.completions.create(**request)
    assert (answer.choices[0].text, answer.choices[0].finish_reason) == (text[:-2], "stop")
    chunks = list(client.completions.create(**request, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == text[:-2]
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"


def test_a_stream_sends_the_same_text_in_chunks_and_ends_in_done(server, client, loaded):
    request = {"model": NAME, "prompt": "my friend", "max_tokens": 20, "seed": 5}
    [(text, _)] = library_texts(loaded, "my friend", max_tokens=20, seed=5)
    chunks = list(client.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * 19 + ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20
    raw = server.post("/v1/completions", json={**request, "stream": True}, headers={"Authorization": f"Bearer {KEY}"})
    events = raw.text.split("\n\n")
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert events[-2:] == ["data: [DONE]", ""] and all(e.startswith("data: {") for e in events[:-2])


def plain_log_probs(loaded, text: str) -> torch.Tensor:
    """The reference: one plain call of the model on a text as the sampler reads it (after a
    newline); [len(text), vocab] log-probabilities of each next token."""
    ids = torch.tensor([loaded.tokenizer.encode("\n" + text)])
    with torch.no_grad():
        return loaded.model(ids, None)[0][0].float().log_softmax(-1)


def test_logprobs_are_the_models_own_for_each_token(client, loaded):
    answer = client.completions.create(model=NAME, prompt="the clouds", max_tokens=4, logprobs=3, seed=1)
    logprobs, text = answer.choices[0].logprobs, answer.choices[0].text
    assert "".join(logprobs.tokens) == text and logprobs.text_offset == [0, 1, 2, 3]
    reference = plain_log_probs(loaded, "the clouds" + text)[-5:-1]  # before each generated character
    drawn = [loaded.tokenizer.encode(token)[0] for token in logprobs.tokens]
    assert logprobs.token_logprobs == pytest.approx([reference[i, t].item() for i, t in enumerate(drawn)], abs=1e-5)
    values, top_ids = reference[0].topk(3)
    expected = {loaded.tokenizer.decode([i]): v for i, v in zip(top_ids.tolist(), values.tolist())}
    expected.setdefault(logprobs.tokens[0], reference[0, drawn[0]].item())  # the drawn token is always there
    assert logprobs.top_logprobs[0] == pytest.approx(expected, abs=1e-5)


def test_logprobs_zero_gives_the_drawn_tokens_alone(client, loaded):
    answer = client.completions.create(model=NAME, prompt="the", max_tokens=3, logprobs=0, seed=4)
    logprobs = answer.choices[0].logprobs
    assert logprobs.top_logprobs == [{t: v} for t, v in zip(logprobs.tokens, logprobs.token_logprobs)]


def test_a_bare_request_gets_openais_defaults(server, loaded):
    """16 tokens at temperature 1, no nucleus, no repetition penalty (OpenAI's documented defaults)."""
    answer = server.post("/v1/completions", json={"prompt": "the", "seed": 9}, headers={"Authorization": f"Bearer {KEY}"})
    [(text, _)] = library_texts(loaded, "the", max_tokens=16, seed=9)
    assert answer.json()["choices"][0]["text"] == text and answer.json()["usage"]["completion_tokens"] == 16
    from lm.serve.openai import CompletionRequest
    config = CompletionRequest().config()
    assert (config.temperature, config.top_p, config.top_k, config.repetition_penalty, config.max_tokens) == (1, 1, 0, 1, 16)


def test_the_model_is_listed_and_the_key_is_asked_for(client, server):
    [card] = client.models.list().data
    assert (card.id, card.object, card.owned_by) == (NAME, "model", "lm") and card.created > 0
    assert client.models.retrieve(NAME).id == NAME
    outsider = openai.OpenAI(base_url="http://testserver/v1", api_key="wrong", http_client=server, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        outsider.models.list()
    assert refused.value.body["code"] == "invalid_api_key"


NEUTRAL = {"user": "someone", "suffix": None, "echo": False, "best_of": 1, "presence_penalty": 0,
           "frequency_penalty": 0, "logit_bias": {}}
BAD_COMPLETIONS = [
    ({"frequency_penalty": 0.5}, 400, "frequency_penalty", "lm has no penalty that grows with a token's count"),
    ({"presence_penalty": 1}, 400, "presence_penalty", "send repetition_penalty instead"),
    ({"best_of": 3}, 400, "best_of", "best_of is not supported"),
    ({"echo": True}, 400, "echo", "echo is not supported"),
    ({"suffix": "end"}, 400, "suffix", "suffix is not supported"),
    ({"logit_bias": {"5": 10}}, 400, "logit_bias", "logit_bias is not supported"),
    ({"prompt": [1, 2, 3]}, 400, "prompt", "token-id prompts are not accepted"),
    ({"prompt": []}, 400, "prompt", "a non-empty list of texts"),
    ({"model": "gpt-4"}, 404, "model", "the model 'gpt-4' is not served here — this server serves 'tiny-char'"),
    ({"max_tokens": 0}, 400, "max_tokens", "max_tokens: Input should be greater than or equal to 1"),
    ({"logprobs": 6}, 400, "logprobs", "logprobs: Input should be less than or equal to 5"),
    ({"n": 5, "prompt": ["a"] * 16, "max_tokens": 1}, 400, "n", "prompts × n is at most 64, not 80"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "stop is at most 4 strings"),
    ({"colour": "red"}, 400, "colour", "colour: Extra inputs are not permitted"),
]


@pytest.mark.parametrize("fields, status, param, message", BAD_COMPLETIONS)
def test_bad_completions_get_openais_error_shape_with_the_reason(server, fields, status, param, message):
    answer = server.post("/v1/completions", json={"model": NAME, "prompt": "a", **fields},
                         headers={"Authorization": f"Bearer {KEY}"})
    error = answer.json()["error"]
    assert (answer.status_code, error["param"]) == (status, param)
    assert message in error["message"] and error["type"] == "invalid_request_error"


def test_an_openai_route_not_served_says_which_are(server):
    answer = server.post("/v1/chat/completions", json={}, headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 404
    assert "POST /v1/completions and GET /v1/models" in answer.json()["error"]["message"]
    assert server.get("/nowhere", headers={"Authorization": f"Bearer {KEY}"}).json() == {"detail": "Not Found"}


def test_openais_fields_at_their_neutral_values_are_accepted(client):
    answer = client.completions.create(model=NAME, prompt="a", max_tokens=2, **NEUTRAL)
    assert len(answer.choices[0].text) == 2


def count(families: dict, name: str, **labels) -> float:
    return sum(s.value for s in families[name].samples if s.name.endswith(("_total", "_count", name))
               and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_the_requests_sessions_and_tokens(loaded):
    with serve(loaded) as server:  # an app of its own: nothing else counted
        for _ in range(2):
            assert server.get("/health").status_code == 200
        server.post("/suggest", json={"text": "the cl", "session": "typist"})
        server.post("/generate", json={"prompt": "a", "max_tokens": 5, "n": 2})
        server.post("/suggest", json={"text": "the", "k": 0})
        server.get("/nowhere")
        metrics = server.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    requests = "lm_http_requests"
    assert count(families, requests, route="/health", method="GET", status="200") == 2
    assert count(families, requests, route="/suggest", method="POST", status="200") == 1
    assert count(families, requests, route="/suggest", method="POST", status="422") == 1
    assert count(families, requests, route="/generate", method="POST", status="200") == 1
    assert count(families, requests, route="other", method="GET", status="404") == 1
    assert count(families, "lm_http_request_duration_seconds", route="/health") == 2
    assert count(families, "lm_sessions") == 1 and count(families, "lm_generated_tokens") == 10


def test_metrics_need_no_key_and_each_app_counts_its_own(loaded):
    with serve(loaded) as other:
        other.get("/health")
    with serve(loaded, api_key=KEY) as server:
        assert server.get("/info").status_code == 401
        text = server.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert count(families, "lm_http_requests", route="/info", status="401") == 1
    assert count(families, "lm_http_requests") == 1  # not the other tests' apps


def test_a_browsers_preflight_is_answered_for_an_allowed_origin_only(loaded):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    with serve(loaded, cors_origin=(ORIGIN,), api_key=KEY) as server:
        allowed = server.options("/v1/completions", headers={"Origin": ORIGIN, **preflight})
        refused = server.options("/v1/completions", headers={"Origin": "https://elsewhere.example", **preflight})
        answer = server.get("/health", headers={"Origin": ORIGIN})
        keyless = server.post("/v1/completions", json={"prompt": "a"}, headers={"Origin": ORIGIN})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in refused.headers
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    # The key is still asked for, and the page may read why it was refused.
    assert keyless.status_code == 401 and keyless.headers["access-control-allow-origin"] == ORIGIN
    with serve(loaded) as server:  # off by default
        answer = server.options("/suggest", headers={"Origin": ORIGIN, **preflight})
    assert "access-control-allow-origin" not in answer.headers


def test_any_origin_and_bad_origins(loaded):
    with serve(loaded, cors_origin=("*",)) as server:
        answer = server.options("/suggest", headers={"Origin": "https://any.example", "Access-Control-Request-Method": "POST"})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "*"
    for origin in ("https://page.example/", "page.example", "https://page.example/app"):
        with pytest.raises(ConfigError, match="--cors-origin must be"):
            ServeSettings(cors_origin=(origin,)).validate()


def test_generate_with_n_gives_the_librarys_samples(server, loaded):
    headers = {"Authorization": f"Bearer {KEY}"}
    request = {"prompt": "the clouds", "max_tokens": 15, "n": 3, "seed": 11}
    generation = generate(loaded.model, loaded.tokenizer, "the clouds",
                          GenerationConfig(n=3, max_tokens=15, seed=11))
    expected = [{"text": s.text, "finish_reason": s.finish_reason, "tokens": len(s.ids)} for s in generation.run()]
    answer = server.post("/generate", json=request, headers=headers).json()
    assert answer == {**expected[0], "seed": 11, "samples": expected}
    assert len({s["text"] for s in expected}) == 3  # three different draws
    stream = server.post("/generate", json={**request, "stream": True}, headers=headers).text
    events = [json.loads(e[len("data: "):]) for e in stream.split("\n\n")[:-2]]
    for index, sample in enumerate(expected):
        mine = [e for e in events if e["index"] == index]
        assert "".join(e["text"] for e in mine) == sample["text"]
        assert mine[-1] == {"index": index, "text": "", "finish_reason": "max_tokens", "tokens": 15, "seed": 11}


def test_a_real_lm_serve_answers_the_openai_client_and_a_pages_preflight(tiny_checkpoints, loaded):
    checkpoint = str(tiny_checkpoints("char"))
    with served(checkpoint, "--fp32", "--processes", "1", "--api-key", KEY, "--cors-origin", ORIGIN) as (process, url):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=30)
        model = client.models.list().data[0].id
        answer = client.completions.create(model=model, prompt="the cat", max_tokens=10, seed=2)
        chunks = list(client.completions.create(model=model, prompt="the cat", max_tokens=10, seed=2, stream=True))
        preflight = httpx.options(f"{url}/v1/completions", timeout=30, headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    [(text, _)] = library_texts(loaded, "the cat", max_tokens=10, seed=2)  # fp32 weights, as served
    assert answer.choices[0].text == text == "".join(c.choices[0].text for c in chunks)
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ORIGIN
