"""A fair baseline for the keyboard: lm against a Kneser-Ney 5-gram built from the same training text.

For a word-tokenizer checkpoint, the 5-gram (lm/mix/ngram.py, unpruned) is built from the training
text the checkpoint was trained on (config.json's corpus.sources), with the checkpoint's own
tokenizer, so both models see the same words and the same <eos> per line. Both then type the
held-out text through the same simulation, lm.evaluate.keyboard.keyboard_metrics, with the same
test for <unk> words:
  - top-1 / top-3 next-word accuracy and keystroke savings (the first --keyboard-words words);
  - perplexity per token over the whole text (lm: lm.evaluate.evaluation.evaluate_text without keyboard);
  - words/s of each keyboard simulation.
When the checkpoint holds the (pruned) n-gram `lm train` weighed for it, lm is also run with
it mixed in over the cache, as `lm suggest` runs it.

The n-gram's suggester follows lm's rule for word models (lm/suggest/engine.py): text ending in
whitespace gets the k most likely next words (never <unk> or <eos>); text ending inside a word
gets the vocabulary words that start with it, ranked by probability given the typed prefix,
and, when the typed word is itself a word, the words after it (completion " word"), weighted
by the probability that it is finished. The typed word itself never takes a slot. The
presentation is lm's too: punctuation only when at least SuggestConfig.punctuation_min
likely, the first letter capitalised at a sentence start.

    python bench/keyboard_quality.py -c checkpoints/wiki            # WikiText-2 test, every word
    python bench/keyboard_quality.py -c checkpoints/wiki --keyboard-words 5000
    python bench/keyboard_quality.py --quick     # trains a tiny word model first: a smoke test

Prints a table and JSON (also written to bench/results/keyboard_quality.json).
"""
from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
import tempfile
import time
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))
import lm  # noqa: E402
from lm.mix.adapt import AdaptConfig, adapted_nll  # noqa: E402
from lm.mix.cache_tune import cache_nll  # noqa: E402
from lm.data.corpus import count_words, load_corpus, split_files, token_ids  # noqa: E402
from lm.evaluate.evaluation import EvalConfig, evaluate_text, read_eval_text, unknown_word_test  # noqa: E402
from lm.mix.ngram import Ngram  # noqa: E402
from lm.evaluate.keyboard import keyboard_metrics, leading_words  # noqa: E402
from lm.suggest.engine import SuggestConfig, Suggester, Suggestion, SuggestionSession  # noqa: E402
from lm.data.text import PUNCT, SENTENCE_END, START_TEXT, char_class  # noqa: E402

WIKITEXT = ROOT.parent / "shared" / "corpora" / "wikitext-2"
MAX_WORD_CHARS = 64  # as lm/suggest/engine.py: a longer run is not a word being typed
TOP_UNIGRAMS = 64  # next-word candidates from the unigram level (the strip needs 4k + 8 = 20)


def training_text(checkpoint: Path) -> str:
    """The training text of the corpus a checkpoint was trained on, found by its fingerprint.

    config.json keeps the sources, not how they were split: a split folder (train.txt beside
    valid.txt and test.txt), the files with a held-out tail, or a train file validated on a
    sibling valid file (as bench/eval_speed.py trains). The reading whose fingerprint matches wins.
    """
    corpus_info = json.loads((Path(checkpoint) / "config.json").read_text())["corpus"]
    sources = corpus_info["sources"]
    folder = Path(sources[0]).parent
    readings = [lambda: load_corpus([str(folder)]), lambda: load_corpus(sources)]
    if len(sources) == 1 and (splits := split_files(folder)) and "valid" in splits:
        readings.append(lambda: load_corpus(sources, valid=str(splits["valid"])))
    for read in readings:
        try:
            corpus = read()
        except lm.CorpusError:
            continue
        if corpus.fingerprint() == corpus_info.get("fingerprint"):
            return corpus.train
    print(f"warning: no reading of {sources} has the checkpoint's fingerprint; building on the whole "
          f"of {sources[0]}", file=sys.stderr)
    return Path(sources[0]).read_text(encoding="utf-8")


def build_ngram(checkpoint, order: int = 5):
    """(the n-gram over the checkpoint's training text, the checkpoint's tokenizer)."""
    tokenizer = lm.load(checkpoint).tokenizer
    if not tokenizer.word_level:
        sys.exit(f"{checkpoint} has a {tokenizer.kind} tokenizer; the n-gram baseline needs a word model")
    ids = np.asarray(token_ids(training_text(checkpoint), tokenizer), dtype=np.int64)
    return Ngram.build(ids, tokenizer.vocab_size, order, min_count=1), tokenizer  # unpruned: the full baseline


class NgramSuggester:
    """Keyboard suggestions from an n-gram, by lm's rule for word models (see the module docstring)."""

    def __init__(self, ngram: Ngram, tokenizer, punctuation_min: float = SuggestConfig().punctuation_min):
        self.ngram, self.tokenizer, self.punctuation_min = ngram, tokenizer, punctuation_min
        ordered = sorted((w, i) for i, w in enumerate(tokenizer.pieces) if i not in tokenizer.special_ids)
        self.texts = [w for w, _ in ordered]
        self.ids = np.array([i for _, i in ordered], dtype=np.int64)
        self.special = np.array(sorted(tokenizer.special_ids), dtype=np.int64)
        # The likeliest words by the unigram level: with the words a context has seen, they hold
        # the top of every distribution (p = scale * unigram + counts at seen words).
        ordinary = np.setdiff1d(np.argsort(-ngram.unigram, kind="stable")[:TOP_UNIGRAMS + len(self.special)], self.special)
        self.top_unigrams = ordinary[np.argsort(-ngram.unigram[ordinary], kind="stable")][:TOP_UNIGRAMS]
        self._distributions: OrderedDict = OrderedDict()  # context ids -> (probs, next-word candidates)

    def suggest(self, text: str, k: int = 3, whole: bool = True) -> list[Suggestion]:
        """Suggestions for `text`; `whole=False` when it is the tail of a longer text (cut at whitespace)."""
        start = len(text)
        while start > 0 and not text[start - 1].isspace() and len(text) - start <= MAX_WORD_CHARS:
            start -= 1
        partial = text[start:]
        if len(partial) > MAX_WORD_CHARS:
            return []
        context = self._context(text[:start], whole)
        probs = self._distribution(context)
        fragments = _fragments(partial)
        words = self._conditional(probs, fragments, k)
        strip = [s for s in self._present(words, partial, _sentence_start(text, start), "") if s.word != partial]
        complete = sum(words.get(f, 0.0) for f in fragments) if partial else 0.0
        if complete > (strip[k - 1].probability if len(strip) >= k else 0.0):
            after = self._distribution((context + tuple(self.tokenizer.encode(partial)))[-(self.ngram.order - 1):])
            following = self._conditional(after, [""], k)
            strip += self._present({w: p * complete for w, p in following.items()}, "", False, " ")
        best: dict[str, Suggestion] = {}
        for s in sorted(strip, key=lambda s: (-s.probability, s.word, s.completion)):
            best.setdefault(s.word, s)
        return list(best.values())[:k]

    def _context(self, context: str, whole: bool) -> tuple:
        """The last n-1 word ids of the context (read after START_TEXT when it is the whole text)."""
        need, window = self.ngram.order - 1, 256
        while True:
            tail = context[-window:]
            cut = len(tail) < len(context)
            if cut:  # drop the word the window cuts into
                tail = tail[next((i for i, ch in enumerate(tail) if ch.isspace()), len(tail)):]
            elif whole:
                tail = START_TEXT + tail
            ids = self.tokenizer.encode(tail)
            if len(ids) >= need or not cut:
                return tuple(ids[-need:]) if need else ()
            window *= 4

    def _distribution(self, context: tuple) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [vocab], the ordinary words that can be among the likeliest next words)."""
        if context in self._distributions:
            self._distributions.move_to_end(context)
            return self._distributions[context]
        scale, parts = self.ngram.mixture(context)
        probs = self.ngram.unigram * scale
        for words, added in parts:
            probs[words] += added
        is_candidate = np.zeros(len(probs), dtype=bool)  # [vocab]
        for words in (self.top_unigrams, *(words for words, _ in parts)):
            is_candidate[words] = True
        is_candidate[self.special] = False
        candidates = np.flatnonzero(is_candidate)
        self._distributions[context] = probs, candidates
        if len(self._distributions) > 16:
            self._distributions.popitem(last=False)
        return probs, candidates

    def _conditional(self, distribution, fragments: list[str], k: int) -> dict[str, float]:
        """Words starting with one of the fragments, with their probability given the typed prefix."""
        probs, candidates = distribution
        words: dict[str, float] = defaultdict(float)
        reached = 0.0
        n = 4 * k + 8  # room for punctuation dropped and cases merged later
        for fragment in fragments:
            if fragment == "" and n <= TOP_UNIGRAMS:  # every ordinary word: only the candidates can lead
                ids = candidates
                reached += 1.0 - float(probs[self.special].sum())
            else:
                lo = bisect.bisect_left(self.texts, fragment)
                hi = bisect.bisect_left(self.texts, fragment + "\U0010ffff")
                ids = self.ids[lo:hi]
                reached += float(probs[ids].sum())
            matching = probs[ids]  # [matching]
            take = min(len(ids), n)
            top = np.argpartition(-matching, take - 1)[:take] if 0 < take < len(ids) else np.arange(len(ids))
            for i in top:
                words[self.tokenizer.pieces[ids[i]]] += float(matching[i])
        return {w: min(p / reached, 1.0) for w, p in words.items()} if reached > 0.0 else {}

    def _present(self, words: dict[str, float], partial: str, sentence_start: bool, prefix: str) -> list[Suggestion]:
        """lm's keyboard conventions: punctuation only when likely, casing from the context; best first."""
        shown: dict[str, float] = defaultdict(float)
        for word, p in words.items():
            if char_class(word[0]) == PUNCT and p < self.punctuation_min:
                continue
            if partial:
                rest = word[len(partial):]
                shown[partial + (rest.upper() if len(partial) > 1 and partial.isupper() else rest)] += p
            else:
                shown[word[:1].upper() + word[1:] if sentence_start else word] += p
        best = sorted(shown.items(), key=lambda wp: (-wp[1], wp[0]))
        return [Suggestion(w, min(p, 1.0), prefix + w[len(partial):]) for w, p in best]


def _fragments(partial: str) -> list[str]:
    """What the next word must start with; a capitalised prefix also matches the word in lower case."""
    variants = [partial]
    if partial[:1].isupper():
        variants += [partial[:1].lower() + partial[1:], partial.lower()]
    return [v for v in dict.fromkeys(variants) if len(v) == len(partial)]


def _sentence_start(text: str, end: int) -> bool:
    while end > 0 and text[end - 1] in " \t":
        end -= 1
    return end == 0 or text[end - 1] in SENTENCE_END


class NgramSession:
    """The keyboard session interface for the n-gram: keeps a bounded tail of the typed text."""

    KEEP = 4096  # characters of context kept (far more than four words)

    def __init__(self, suggester: NgramSuggester):
        self.suggester, self.text, self.whole = suggester, "", True

    def type(self, chars: str) -> None:
        self.text += chars
        if len(self.text) > 2 * self.KEEP:
            tail = self.text[-self.KEEP:]
            self.text = tail[next((i for i, ch in enumerate(tail) if ch.isspace()), 0):]
            self.whole = False

    def suggestions(self, k: int = 3) -> list[Suggestion]:
        return self.suggester.suggest(self.text, k, whole=self.whole)


def simulate(suggester, session, text: str, tokenizer) -> dict:
    """Keyboard metrics and words/s of one suggester typing the text."""
    started = time.perf_counter()
    metrics = keyboard_metrics(suggester, text, session=session, is_unknown=unknown_word_test(tokenizer))
    seconds = time.perf_counter() - started
    return {**{k: v for k, v in metrics.to_dict().items() if k in ("words", "unknown_words", "top1_accuracy",
                                                                   "top3_accuracy", "keystroke_savings")},
            "seconds": seconds, "words_per_s": (metrics.words + metrics.unknown_words) / max(seconds, 1e-9)}


def measure(checkpoint: Path, text: str, args) -> dict:
    started = time.perf_counter()
    ngram, tokenizer = build_ngram(checkpoint, args.order)
    build_seconds = time.perf_counter() - started
    model = lm.load(checkpoint).model
    scored = leading_words(text, args.max_words) if args.max_words else text
    keyboard_text = leading_words(text, args.keyboard_words) if args.keyboard_words else text

    ids = np.concatenate([tokenizer.encode(START_TEXT), token_ids(scored, tokenizer)]).astype(np.int64)
    ngram_nll = -ngram.logprobs(ids, first=1).mean()
    suggester = NgramSuggester(ngram, tokenizer)
    ngram_row = {"perplexity": math.exp(ngram_nll), **simulate(suggester, NgramSession(suggester), keyboard_text, tokenizer)}

    loss = evaluate_text(model, tokenizer, scored, EvalConfig(keyboard=False, device="cpu")).loss
    lm_suggester = Suggester(model, tokenizer)
    lm_row = {"perplexity": loss.perplexity,
              **simulate(lm_suggester, SuggestionSession(lm_suggester), keyboard_text, tokenizer)}
    rows = {"ngram": ngram_row, "lm": lm_row}
    # The cache and dynamic evaluation read the text as one stream; "lm, one stream" is their baseline.
    cache = lm.load(checkpoint).cache
    started = time.perf_counter()
    stream_nll, cache_nll_ = cache_nll(model, ids, cache)
    rows["lm_stream"] = {"perplexity": math.exp(stream_nll.mean().item())}
    if cache.enabled:
        cached = Suggester(model, tokenizer, cache=cache)
        rows["lm_cache"] = {"perplexity": math.exp(cache_nll_.mean().item()), "settings": cache.to_dict(),
                            "perplexity_seconds": time.perf_counter() - started,
                            **simulate(cached, SuggestionSession(cached), keyboard_text, tokenizer)}
    mixed = lm.load(checkpoint).ngram  # the pruned n-gram `lm train` counted and weighed, over the cache
    if mixed is not None:
        with_both = Suggester(model, tokenizer, cache=cache if cache.enabled else None, ngram=mixed)
        rows["lm_cache_ngram"] = {"perplexity": math.exp(mixed.mixed_nll(cache_nll_, ids, mixed.weight).mean().item()),
                                  "weight": mixed.weight, "stored_ngrams": mixed.size(),
                                  **simulate(with_both, SuggestionSession(with_both), keyboard_text, tokenizer)}
    if args.adapt_words:
        adapt_ids = ids[: len(np.concatenate([tokenizer.encode(START_TEXT), token_ids(leading_words(scored, args.adapt_words), tokenizer)]))]
        started = time.perf_counter()
        adapted = adapted_nll(model, adapt_ids, AdaptConfig(lr=args.adapt_lr, decay=args.adapt_decay))
        seconds = time.perf_counter() - started
        rows["lm_adapt"] = {"perplexity": math.exp(adapted.mean().item()), "tokens": len(adapted),
                            "same_tokens_without": math.exp(stream_nll[: len(adapted)].mean().item()),
                            "settings": {"lr": args.adapt_lr, "decay": args.adapt_decay},
                            "seconds": seconds, "tokens_per_s": len(adapted) / seconds}
    return {"checkpoint": str(checkpoint), "order": args.order, "ngram_build_seconds": build_seconds,
            "ngrams": {k: len(level.grams) for k, level in ngram.levels.items()},
            "scored_tokens": int(len(ids) - 1), "scored_words": count_words(scored),
            "keyboard_words": count_words(keyboard_text), **rows}


def train_default(out: Path, minutes: float) -> Path:
    """lm train on WikiText-2 with the word tokenizer and every default, for `minutes`."""
    lm.train(load_corpus([str(WIKITEXT)]), out, tokenizer_config=lm.TokenizerConfig(kind="word"),
             config=lm.TrainConfig(max_time=minutes * 60), progress=_Lines())
    return out


class _Lines(lm.Progress):
    def evaluated(self, record):
        print(f"valid step {record['step']}: perplexity {record['valid_perplexity']:.1f} after {record['elapsed'] / 60:.1f} min",
              flush=True)

    def message(self, text):
        print(text, flush=True)


def quick_model(out: Path) -> Path:
    """A tiny word model on WikiText-2, a few steps: enough to exercise every path."""
    if not WIKITEXT.exists():
        sys.exit(f"{WIKITEXT} not found — the shared corpora live beside the repository")
    lm.train(load_corpus([str(WIKITEXT)]), out, lm.ModelConfig(layers=1, hidden=64, emb=64),
             lm.TokenizerConfig(kind="word"), lm.TrainConfig(max_steps=10, eval_every=0, device="cpu"))
    return out


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Keyboard quality on {report['text']} ({report['keyboard_words']:,} words typed, "
                        f"perplexity over {report['scored_tokens']:,} tokens)")
    for column in ("model", "top-1", "top-3", "keystroke savings", "perplexity / token", "words/s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    names = {"ngram": f"{report['order']}-gram KN", "lm": "lm", "lm_stream": "lm, one stream",
             "lm_cache": "lm + cache (one stream)", "lm_cache_ngram": "lm + cache + n-gram (one stream)",
             "lm_adapt": "lm + dynamic evaluation (one stream)"}
    for key, name in names.items():
        row = report.get(key)
        if row is None:
            continue
        cell = lambda name, fmt: format(row[name], fmt) if name in row else "—"  # noqa: E731
        perplexity = f"{row['perplexity']:.1f}"
        if key == "lm_adapt":
            perplexity += f" (first {row['tokens']:,} tokens; {row['same_tokens_without']:.1f} without)"
        table.add_row(name, cell("top1_accuracy", ".1%"), cell("top3_accuracy", ".1%"), cell("keystroke_savings", ".1%"),
                      perplexity, cell("words_per_s", ",.0f") if key != "lm_adapt" else f"{row['tokens_per_s']:,.0f} tokens/s")
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", "-c", type=Path, help="a word-tokenizer checkpoint")
    parser.add_argument("--text", default=str(WIKITEXT / "test.txt"), help="held-out text")
    parser.add_argument("--keyboard-words", type=int, help="type only the first N words (default: all)")
    parser.add_argument("--max-words", type=int, help="perplexity over the first N words only (default: all)")
    parser.add_argument("--order", type=int, default=5, help="n of the n-gram")
    parser.add_argument("--train-minutes", type=float, help="first train the default word model on WikiText-2 this long "
                        "(into --checkpoint, or checkpoints/keyboard-quality)")
    parser.add_argument("--adapt-words", type=int, default=0, help="dynamic evaluation over the first N words (0: skip; it is slow)")
    parser.add_argument("--adapt-lr", type=float, default=AdaptConfig.lr)
    parser.add_argument("--adapt-decay", type=float, default=AdaptConfig.decay)
    parser.add_argument("--quick", action="store_true", help="a tiny word model and a few hundred words: a smoke test")
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "keyboard_quality.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.checkpoint = quick_model(Path(tmp) / "m")
            args.keyboard_words, args.max_words = args.keyboard_words or 300, args.max_words or 5000
        if args.train_minutes:
            args.checkpoint = train_default(args.checkpoint or ROOT / "checkpoints" / "keyboard-quality", args.train_minutes)
        if not args.checkpoint:
            sys.exit("give --checkpoint (a word-tokenizer checkpoint), --train-minutes or --quick")
        text = read_eval_text([args.text])[0]
        report = {"text": args.text, "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__},
                  **measure(args.checkpoint, text, args)}
    print_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
