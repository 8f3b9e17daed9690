"""OpenAI-compatible routes: `POST /v1/completions` and `GET /v1/models`, so the openai client
library, and the tools built on it, can talk to `lm serve`.

A completion is lm's sampler (lm/suggest/sampler.py) under OpenAI's names and defaults:
temperature 1, top_p 1, 16 tokens, no repetition penalty. lm's own `top_k` and
`repetition_penalty` are accepted beside them, as other OpenAI-style servers accept their extra
sampling fields. OpenAI's fields lm has no counterpart for are accepted at their neutral values
and refused otherwise, with a 400 that says what lm has instead. Errors on these routes come in
OpenAI's shape, `{"error": {"message", "type", "param", "code"}}` (the app's handlers, app.py).
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from .._arrays import log_softmax, top_k
from ..data.text import START_TEXT
from ..suggest.config import GenerationConfig
from ..suggest.sampler import Sampler, generate
from .routes import MAX_STOP_CHARS, MAX_TOKENS, Strict, service
from .service import Service, log

PREFIX = "/v1/"
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for a completion
MAX_LOGPROBS = 5  # OpenAI's limit on `logprobs`
MAX_N, MAX_PROMPTS, MAX_CHOICES = 16, 16, 64  # choices = prompts × n: bounds one request's work
MAX_STOPS = 4  # OpenAI's limit
# lm's reasons for ending a sample, as OpenAI names them: "length" for a token budget spent,
# "stop" for a natural end (a stop string, a sentence or a paragraph).
FINISH_REASONS = {"max_tokens": "length", "max_words": "length", "stop": "stop", "sentence": "stop", "paragraph": "stop"}

router = APIRouter()


class OpenAIError(Exception):
    """A request these routes refuse, answered in OpenAI's error shape."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


def is_openai_path(path: str) -> bool:
    return path.startswith(PREFIX)


def error_body(message: str, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error") -> dict:
    """OpenAI's error shape, which its client library reads the message from."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _repetition_note() -> str:
    return (f"lm's repetition_penalty is CTRL's: a token seen in the last {GenerationConfig.repetition_window} "
            "tokens has its logit divided by it, however often it was seen (1 is off)")


# OpenAI's fields with no counterpart in lm: (is the value neutral?, why it is refused otherwise).
NEUTRAL_ONLY = {
    "echo": (lambda v: not v, "echo is not supported — the prompt is not sent back; prepend it yourself"),
    "suffix": (lambda v: not v, "suffix is not supported — the model reads left to right and cannot write "
                                "towards a given ending"),
    "best_of": (lambda v: v in (None, 1), "best_of is not supported — ask for n completions and rank them yourself"),
    "presence_penalty": (lambda v: not v, f"presence_penalty is not supported — {_repetition_note()}; send "
                                          "repetition_penalty instead"),
    "frequency_penalty": (lambda v: not v, "frequency_penalty is not supported: lm has no penalty that grows with "
                                           f"a token's count, and {_repetition_note()} — a different thing; send "
                                           "repetition_penalty instead"),
    "logit_bias": (lambda v: not v, "logit_bias is not supported — this model's token ids are not OpenAI's"),
}


class StreamOptions(Strict):
    include_usage: bool = False  # one more event before [DONE], with no choices and the usage


class CompletionRequest(Strict):
    model: str | None = None  # when given, the served model's name (GET /v1/models)
    prompt: str | list[Any] = ""  # a text, or a list of texts: n choices each
    max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(1.0, ge=0, le=2)
    top_p: float | None = Field(1.0, ge=0, le=1)
    n: int | None = Field(1, ge=1, le=MAX_N)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**64 - 1)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    top_k: int = Field(0, ge=0, le=1_000_000)  # lm's own (0: off)
    repetition_penalty: float = Field(1.0, gt=0, le=10)  # lm's own (1: off, OpenAI's behaviour)
    user: str | None = None  # the caller's end user, for OpenAI's abuse monitoring: nothing to do here
    echo: bool | None = False
    suffix: str | None = None
    best_of: int | None = None
    presence_penalty: float | None = 0
    frequency_penalty: float | None = 0
    logit_bias: dict[str, float] | None = None

    def prompts(self) -> list[str]:
        """The prompts, one or several; token-id prompts are refused."""
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise OpenAIError("prompt must be a text or a non-empty list of texts — token-id prompts are not "
                              "accepted (this model's tokens are not OpenAI's)", "prompt")
        if len(prompts) > MAX_PROMPTS:
            raise OpenAIError(f"prompt is a list of at most {MAX_PROMPTS} texts, not {len(prompts)} — send several requests", "prompt")
        if len(prompts) * (self.n or 1) > MAX_CHOICES:
            raise OpenAIError(f"prompts × n is at most {MAX_CHOICES}, not {len(prompts) * self.n} — lower n", "n")
        return prompts

    def config(self) -> GenerationConfig:
        """lm's generation settings for this request.

        Raises:
            OpenAIError: a field lm cannot honour, or a bad stop list.
        """
        for name, (neutral, reason) in NEUTRAL_ONLY.items():
            if not neutral(getattr(self, name)):
                raise OpenAIError(reason, name)
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOPS or any(not 0 < len(s) <= MAX_STOP_CHARS for s in stops):
            raise OpenAIError(f"stop is at most {MAX_STOPS} strings of 1 to {MAX_STOP_CHARS} characters — drop the "
                              "empty or extra ones", "stop")
        temperature = 1.0 if self.temperature is None else self.temperature
        top_p = 1.0 if self.top_p is None else self.top_p
        return GenerationConfig(
            n=self.n or 1, max_tokens=self.max_tokens or DEFAULT_MAX_TOKENS, stop=tuple(stops), seed=self.seed,
            temperature=0.0 if top_p == 0 else temperature,  # an empty nucleus keeps only the likeliest token
            top_p=top_p or 1.0, top_k=self.top_k, repetition_penalty=self.repetition_penalty)


class LegacyLogprobs(BaseModel):
    """OpenAI's completions logprobs: per generated token, its text, log-probability, the top ones, where it starts."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: LegacyLogprobs | None
    finish_reason: str | None  # "stop" or "length"; null until the choice's last chunk


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.total_tokens = self.prompt_tokens + self.completion_tokens


class Completion(BaseModel):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None  # a stream's chunks have none


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "lm"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


# The completion itself: blocking model work, run in the service's worker threads.

@dataclass
class Token:
    """One generated token of a choice: the text it adds, where that starts, its log-probabilities (when asked)."""

    text: str
    offset: int
    logprob: float = 0.0
    top: dict[str, float] | None = None


@dataclass
class Chunk:
    """A part of one choice's text that may be sent, with its tokens; the last one has the finish reason."""

    index: int
    text: str
    tokens: list[Token]
    finish_reason: str | None = None


class ChoiceText:
    """One choice's text as it may be sent. OpenAI leaves a stop string out of the text, where
    lm's sampler keeps it: tokens that might still begin a stop string are held back until the
    sample goes on past them or ends, then the text is cut where the stop string starts."""

    def __init__(self, index: int, stops: tuple[str, ...]):
        self.index, self.stops = index, stops
        self.hold = max(map(len, stops), default=1) - 1  # characters that might begin a stop string
        self.text = ""  # every character generated
        self.held: list[Token] = []  # tokens not sent yet
        self.sent = 0  # characters of `text` sent
        self.finished = False

    def add(self, token: Token) -> None:
        self.held.append(token)
        self.text += token.text

    def ready(self) -> Chunk | None:
        """The tokens that can no longer begin a stop string, if any."""
        safe = len(self.text) - self.hold
        count = next((i for i, t in enumerate(self.held) if t.offset + len(t.text) > safe), len(self.held))
        return self._chunk(self.held[:count], self.held[count - 1].offset + len(self.held[count - 1].text)) if count else None

    def finish(self, reason: str) -> Chunk:
        """The rest of the text, cut before a stop string, and OpenAI's finish reason."""
        found = [at for at in (self.text.find(s) for s in self.stops) if at >= 0]
        end = min(found) if reason == "stop" and found else len(self.text)
        self.finished = True
        chunk = self._chunk([t for t in self.held if t.offset < end], end)
        chunk.finish_reason = FINISH_REASONS[reason]
        return chunk

    def _chunk(self, tokens: list[Token], end: int) -> Chunk:
        chunk = Chunk(self.index, self.text[self.sent:end], tokens)
        self.held = self.held[len(tokens):]
        self.sent = end
        return chunk


class Scorer:
    """The model's own log-probabilities for the tokens one choice draws: before temperature,
    top-k, top-p and the repetition penalty change them, as OpenAI reports them."""

    def __init__(self, reader: Sampler, top: int):
        self.reader, self.top = reader, top

    def score(self, token: int, text: str) -> tuple[float, dict[str, float]]:
        """The token's log-probability and the `top` likeliest (the token among them); then read it."""
        log_probs = log_softmax(self.reader.logits)  # [vocab]
        values, ids = top_k(log_probs, self.top)
        top = {self._text(i): v for i, v in zip(ids.tolist(), values.tolist())}
        top.setdefault(text, float(log_probs[token]))
        logprob = float(log_probs[token])
        last_char = self.reader.last_char
        self.reader.feed_ids([token])
        self.reader.last_char = text[-1:] or last_char
        return logprob, top

    def _text(self, token: int) -> str:
        return self.reader.tokenizer.token_bytes(token, self.reader.last_char).decode("utf-8", "replace")


class PromptCompletion:
    """The n choices of one prompt, drawn as one batch, as chunks ready to send."""

    def __init__(self, svc: Service, prompt: str, config: GenerationConfig, first_index: int, logprobs: int | None):
        self.generation = generate(svc.backend, svc.tokenizer, prompt, config)  # reads the prompt
        self.choices = [ChoiceText(first_index + i, config.stop) for i in range(config.n)]
        self.scorers = None
        if logprobs is not None:
            reader = Sampler(svc.backend, svc.tokenizer)
            reader.feed(START_TEXT + prompt)  # as generate() reads it
            self.scorers = [Scorer(reader.copy(), logprobs) for _ in range(config.n)]
        self.prompt_tokens = len(svc.tokenizer.encode(prompt))

    @property
    def completion_tokens(self) -> int:
        return sum(len(sample.ids) for sample in self.generation.samples)

    def chunks(self) -> Iterator[Chunk]:
        """Each choice's text as soon as it may be sent, and each choice's end."""
        for piece in self.generation:
            choice = self.choices[piece.index]
            token = Token(piece.text, len(choice.text))
            if self.scorers is not None:
                token.logprob, token.top = self.scorers[piece.index].score(piece.token, piece.text)
            choice.add(token)
            reason = self.generation.samples[piece.index].finish_reason
            chunk = choice.finish(reason) if reason is not None else choice.ready()
            if chunk is not None:
                yield chunk
        for choice, sample in zip(self.choices, self.generation.samples):
            if not choice.finished:  # a sample that ended on a token it refused (max_words)
                yield choice.finish(sample.finish_reason or "max_tokens")


def _choice(chunk: Chunk, logprobs: int | None) -> CompletionChoice:
    legacy = None
    if logprobs is not None:
        legacy = LegacyLogprobs(tokens=[t.text for t in chunk.tokens], token_logprobs=[t.logprob for t in chunk.tokens],
                                top_logprobs=[t.top for t in chunk.tokens], text_offset=[t.offset for t in chunk.tokens])
    return CompletionChoice(text=chunk.text, index=chunk.index, logprobs=legacy, finish_reason=chunk.finish_reason)


def _joined(chunks: list[Chunk]) -> Chunk:
    """A choice's chunks as one."""
    return Chunk(chunks[0].index, "".join(c.text for c in chunks), [t for c in chunks for t in c.tokens],
                 chunks[-1].finish_reason)


def _complete(svc: Service, prompt: str, config: GenerationConfig, first_index: int,
              logprobs: int | None) -> tuple[list[Chunk], PromptCompletion]:
    completion = PromptCompletion(svc, prompt, config, first_index, logprobs)
    chunks = list(completion.chunks())
    joined = [_joined([c for c in chunks if c.index == choice.index]) for choice in completion.choices]
    return joined, completion


# The routes.

@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request,
                      svc: Service = Depends(service)) -> Completion | StreamingResponse:
    """Continue each prompt n times (OpenAI's completions); with `stream`, server-sent events ending in [DONE]."""
    _check_model(body.model, svc)
    prompts, config = body.prompts(), body.config()
    config.validate()  # a ConfigError becomes a 400 with its one line
    head = Completion(id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=svc.settings.name, choices=[])
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(_events(svc, head, prompts, config, body.logprobs, usage),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    usage = Usage()
    for at, prompt in enumerate(prompts):
        chunks, completion = await svc.run(_complete, svc, prompt, config, at * config.n, body.logprobs)
        head.choices += [_choice(chunk, body.logprobs) for chunk in chunks]
        usage.add(completion.prompt_tokens, completion.completion_tokens)
        svc.metrics.generated_tokens.inc(completion.completion_tokens)
    head.usage = usage
    return head


async def _events(svc: Service, head: Completion, prompts: list[str], config: GenerationConfig,
                  logprobs: int | None, include_usage: bool) -> AsyncIterator[str]:
    """One completion chunk per piece of a choice's text, the choices' ends, then [DONE] (as OpenAI streams)."""
    usage = Usage()
    try:
        for at, prompt in enumerate(prompts):
            completion = await svc.run(PromptCompletion, svc, prompt, config, at * config.n, logprobs)
            chunks = completion.chunks()
            try:
                while (chunk := await svc.run(next, chunks, None)) is not None:
                    head.choices = [_choice(chunk, logprobs)]
                    yield _event(head.model_dump(exclude={"usage"}))
            finally:  # a client that leaves mid-stream: count what was generated all the same
                svc.metrics.generated_tokens.inc(completion.completion_tokens)
            usage.add(completion.prompt_tokens, completion.completion_tokens)
    except Exception as error:  # the status line is sent: the error can only be an event
        log.exception("completion failed")
        yield _event(error_body(f"generation failed ({type(error).__name__}); the server log has the details",
                                kind="server_error"))
        return
    if include_usage:
        head.choices, head.usage = [], usage
        yield _event(head.model_dump())
    yield "data: [DONE]\n\n"


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.get("/v1/models")
def models(request: Request, svc: Service = Depends(service)) -> ModelList:
    """The one model this server serves."""
    return ModelList(data=[_card(request, svc)])


@router.get("/v1/models/{model}")
def model(model: str, request: Request, svc: Service = Depends(service)) -> ModelCard:
    _check_model(model, svc)
    return _card(request, svc)


def _card(request: Request, svc: Service) -> ModelCard:
    return ModelCard(id=svc.settings.name, created=request.app.state.created)


def _check_model(name: str | None, svc: Service) -> None:
    if name is not None and name != svc.settings.name:
        raise OpenAIError(f"the model {name!r} is not served here — this server serves {svc.settings.name!r} "
                          "(GET /v1/models)", "model", status=404, code="model_not_found")
