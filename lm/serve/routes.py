"""The routes, with their request and answer models.

Requests forbid unknown fields and bound every number, so a typo or an absurd value gets a
422 that names the field instead of a slow or silent answer.
"""
from __future__ import annotations

import json
import os
import time
from typing import Annotated, AsyncIterator, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..suggest.sampler import GenerationConfig, Generation, Sample, generate
from ..suggest.config import SuggestConfig
from .service import Service, log

MAX_K = 20  # suggestions per request
MAX_TOKENS = 2048  # tokens (or words) per generation: bounds the time one request holds a worker
MAX_STOPS, MAX_STOP_CHARS = 8, 200
MAX_SAMPLES = 16  # n of one generation: drawn as one batch
MAX_WORD_POINTS = 64  # touch points of one typed word
MAX_SWIPE_POINTS = 2000  # points of one swipe
SESSION_ID = r"^[A-Za-z0-9_.:-]{1,128}$"

router = APIRouter()


def service(request: Request) -> Service:
    return request.app.state.service


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Coordinate = Annotated[float, Field(ge=-100, le=100)]  # key widths
TouchPoint = tuple[Coordinate, Coordinate]


class SuggestRequest(Strict):
    text: str = ""
    k: int = Field(SuggestConfig.k, ge=1, le=MAX_K)
    session: str | None = Field(None, pattern=SESSION_ID, description="keep this client's state between keystrokes")
    correct: bool = Field(True, description="correct a word just finished; fix slips in a typed prefix")
    touches: list[TouchPoint] | None = Field(None, max_length=MAX_WORD_POINTS,
                                             description="where the letters of the last word fell (x, y in key widths)")


class SwipeRequest(Strict):
    text: str = ""
    points: list[TouchPoint] = Field(min_length=1, max_length=MAX_SWIPE_POINTS, description="the stroke, x, y in key widths")
    k: int = Field(SuggestConfig.k, ge=1, le=MAX_K)
    session: str | None = Field(None, pattern=SESSION_ID)


class SuggestionItem(BaseModel):
    word: str
    probability: float
    completion: str  # append this to the text (after deleting `delete` characters) to get the word
    slot: Literal["prediction", "typed", "correction", "alternative"]
    delete: int


class CorrectionItem(BaseModel):
    typed: str
    word: str
    reason: str


class SuggestAnswer(BaseModel):
    suggestions: list[SuggestionItem]
    text: str  # the text after the correction (the text sent when there is none)
    correction: CorrectionItem | None  # the word just finished was corrected
    elapsed_ms: float


class SwipeAnswer(BaseModel):
    suggestions: list[SuggestionItem]
    elapsed_ms: float


class GenerateRequest(Strict):
    prompt: str = ""
    n: int = Field(GenerationConfig.n, ge=1, le=MAX_SAMPLES, description="samples drawn at once, as one batch")
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_words: int | None = Field(None, ge=1, le=MAX_TOKENS)
    stop_at: Literal["sentence", "paragraph"] | None = None
    temperature: float = Field(GenerationConfig.temperature, ge=0, le=10)
    top_k: int = Field(GenerationConfig.top_k, ge=0, le=1_000_000)
    top_p: float = Field(GenerationConfig.top_p, gt=0, le=1)
    repetition_penalty: float = Field(GenerationConfig.repetition_penalty, gt=0, le=10)
    seed: int | None = Field(None, ge=0, le=2**64 - 1)  # what a generation without one reports
    stop: list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]] = Field([], max_length=MAX_STOPS)
    stream: bool = False

    def config(self) -> GenerationConfig:
        fields = self.model_dump(exclude={"prompt", "stream", "stop"})
        return GenerationConfig(stop=tuple(self.stop), **fields)


class GeneratedSample(BaseModel):
    text: str
    finish_reason: str | None  # max_tokens, max_words, stop, sentence, paragraph
    tokens: int


class GenerateAnswer(GeneratedSample):
    """The first sample's fields (the answer's shape before n existed), the seed, and every sample."""

    seed: int
    samples: list[GeneratedSample]


@router.get("/health")
def health() -> dict:
    return {"status": "ok"}


@router.get("/info")
def info(svc: Service = Depends(service)) -> dict:
    """The model's settings, tokenizer, size and figures, and the service's limits."""
    tokenizer, settings = svc.tokenizer, svc.settings
    return {
        "name": settings.name,
        "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size},
        "model": svc.backend.config.to_dict(),
        "device": str(svc.backend.device),
        "backend": svc.backend.name,
        **settings.about,
        "limits": {"k": MAX_K, "max_tokens": MAX_TOKENS, "body_bytes": settings.max_body,
                   "sessions": svc.sessions.max_sessions, "session_idle_s": settings.session_idle,
                   "processes": settings.processes or 1},
        "process": os.getpid(),  # this answer's server process, whose sessions are counted here
        "sessions": len(svc.sessions),
    }


@router.get("/suggest")
async def suggest_get(query: Annotated[SuggestRequest, Query()], svc: Service = Depends(service)) -> SuggestAnswer:
    """Suggestions for `text` (the same as `lm suggest --json`)."""
    return await _suggest(query, svc)


@router.post("/suggest")
async def suggest_post(body: SuggestRequest, svc: Service = Depends(service)) -> SuggestAnswer:
    """Suggestions for `text` (the same as `lm suggest --json`); long texts go here rather than in a URL."""
    return await _suggest(body, svc)


async def _suggest(request: SuggestRequest, svc: Service) -> SuggestAnswer:
    start = time.perf_counter()
    strip = await svc.run(svc.suggest, request.text, request.k, request.session, request.correct, request.touches)
    items = [SuggestionItem(**s.to_dict()) for s in strip.suggestions]
    correction = None
    if strip.corrected:
        c = strip.correction
        correction = CorrectionItem(typed=c.typed, word=c.word, reason=c.reason)
    return SuggestAnswer(suggestions=items, text=strip.text, correction=correction,
                         elapsed_ms=round((time.perf_counter() - start) * 1000, 3))


@router.post("/swipe")
async def swipe(body: SwipeRequest, svc: Service = Depends(service)) -> SwipeAnswer:
    """The words a swipe over the layout (GET /layout) meant, as the next word after `text`."""
    start = time.perf_counter()
    found = await svc.run(svc.swipe, body.text, body.points, body.k, body.session)
    return SwipeAnswer(suggestions=[SuggestionItem(**s.to_dict()) for s in found],
                       elapsed_ms=round((time.perf_counter() - start) * 1000, 3))


@router.get("/layout")
def layout(svc: Service = Depends(service)) -> dict:
    """The keyboard layout the server weighs touches and swipes on (key centres and sizes, in key
    widths); `forgiving` is false when the model has no lexicon, so nothing is corrected."""
    return {"forgiving": svc.keyboard.forgiving, **svc.keyboard.layout.to_dict()}


@router.post("/generate", response_model=None)
async def generate_text(body: GenerateRequest, svc: Service = Depends(service)) -> GenerateAnswer | StreamingResponse:
    """Continue `prompt` n times; with `stream`, server-sent events: one per piece of a sample's
    text, then each sample's finish reason."""
    config = body.config()
    config.validate()  # a ConfigError becomes a 400 with its one line
    generation = await svc.run(generate, svc.backend, svc.tokenizer, body.prompt, config)  # reads the prompt
    if body.stream:
        return StreamingResponse(_events(generation, svc), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    samples = [_sample(s) for s in await svc.run(generation.run)]
    svc.metrics.generated_tokens.inc(sum(s.tokens for s in samples))
    return GenerateAnswer(**samples[0].model_dump(), seed=generation.seed, samples=samples)


def _sample(sample: Sample) -> GeneratedSample:
    return GeneratedSample(text=sample.text, finish_reason=sample.finish_reason, tokens=len(sample.ids))


async def _events(generation: Generation, svc: Service) -> AsyncIterator[str]:
    """One event per piece of text, then one per sample with its finish reason, then [DONE]
    (as OpenAI-style servers do); `index` says which sample an event is about."""
    pieces = iter(generation)
    try:
        while (piece := await svc.run(next, pieces, None)) is not None:
            if piece.text:
                yield _event({"index": piece.index, "text": piece.text, "finish_reason": None})
    except Exception as error:  # the status line is sent: the error can only be an event
        log.exception("generation failed")
        yield _event({"error": f"generation failed ({type(error).__name__}); the server log has the details"})
        return
    finally:  # a client that leaves mid-stream: count what was generated all the same
        svc.metrics.generated_tokens.inc(sum(len(s.ids) for s in generation.samples))
    for index, sample in enumerate(generation.samples):
        yield _event({"index": index, "text": "", "finish_reason": sample.finish_reason, "tokens": len(sample.ids),
                      "seed": generation.seed})
    yield "data: [DONE]\n\n"


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
