"""Run an `lm export` folder without PyTorch: onnxruntime, numpy and sentencepiece only.

    python runtime.py EXPORT_DIR "the clouds are in the"          # next-word suggestions
    python runtime.py EXPORT_DIR "The old man" --generate 40       # continue the text

    model = Model("EXPORT_DIR")
    stream = model.stream("the clouds are in the")   # reads the text once
    stream.suggest(3)                                # [("sky", 0.93), ...]
    stream.feed(" sky")                              # reads only the new tokens
    stream.generate(20, seed=1)                      # continues the text, and keeps it

This file imports nothing from lm, so an app can ship it as it is: `lm export` puts a copy in
every export folder. A stream carries the graph's state, so each call costs only the tokens
it adds. Feed whole words: each feed is tokenized on its own (a char model takes any split).
"""
from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from pathlib import Path

import numpy as np
import onnxruntime as ort

FORMAT, FORMAT_VERSION = "lm-onnx", 1
SPM_SPACE = "\u2581"  # sentencepiece's visible space, "▁"
READ_BUDGET = 2**22  # logits floats one call may return while reading a text (16 MB)


class Tokenizer:
    """The tokenizer of an export: char, word (one per whitespace word, <eos> per line) or sentencepiece."""

    def __init__(self, folder: Path, info: dict):
        self.kind, self.special = info["kind"], set(info["special_ids"].values())
        self.unk_id, self.eos_id = info["special_ids"]["unk"], info["special_ids"].get("eos")
        if self.kind in ("char", "word"):
            data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
            self.pieces = [""] + data["chars"] if self.kind == "char" else ["<unk>", "<eos>"] + data["words"]
            self.index = {p: i for i, p in enumerate(self.pieces) if i not in self.special}
        else:
            import sentencepiece as spm

            self.sp = spm.SentencePieceProcessor(model_proto=(folder / "tokenizer.model").read_bytes())
            hidden = lambda i: self.sp.is_byte(i) or self.sp.is_unknown(i) or self.sp.is_control(i)  # noqa: E731
            self.pieces = ["" if hidden(i) else self.sp.id_to_piece(i).replace(SPM_SPACE, " ")
                           for i in range(self.sp.get_piece_size())]
            self.space_ids = [self.sp.piece_to_id(f"<0x{b:02X}>") for b in SPM_SPACE.encode()]
            self.newline_id = self.sp.piece_to_id("\n")

    def encode(self, text: str) -> list[int]:
        if self.kind == "char":
            return [self.index.get(ch, self.unk_id) for ch in text]
        ids: list[int] = []
        for n, line in enumerate(text.split("\n")):
            if n:
                ids.append(self.eos_id if self.kind == "word" else self.newline_id)
            if self.kind == "word":
                ids.extend(self.index.get(w, self.unk_id) for w in line.split())
                continue
            for m, part in enumerate(line.split(SPM_SPACE)):  # a literal "▁" is spelt with its bytes
                ids.extend((self.space_ids if m else []) + self.sp.encode(part))
        return ids

    def decode(self, ids: list[int]) -> str:
        if self.kind == "word":  # words apart by spaces, <eos> a newline
            out: list[str] = []
            for i in ids:
                out.append("\n" if i == self.eos_id else ("" if out[-1:] in ([], ["\n"]) else " ") + self.pieces[i])
            return "".join(out)
        return "".join(self.pieces[i] for i in ids) if self.kind == "char" else self.sp.decode(ids)


class Model:
    """An export folder: the ONNX step function and its tokenizer."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        folder = Path(folder)
        self.manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if self.manifest.get("format") != FORMAT or self.manifest.get("format_version", 99) > FORMAT_VERSION:
            raise ValueError(f"{folder} is not an lm export this runtime reads (format {FORMAT} {FORMAT_VERSION})")
        graph = self.manifest["graph"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(folder / graph["file"]), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer(folder, self.manifest["tokenizer"])
        self.inputs = [s["input"] for s in graph["state"]]
        self.outputs = ["logits"] + [s["output"] for s in graph["state"]]
        self.layers, _, self.hidden = graph["state"][0]["shape"]
        self.chunk = max(16, min(2048, READ_BUDGET // self.manifest["tokenizer"]["vocab_size"]))

    def zero_state(self, batch: int = 1) -> list[np.ndarray]:
        return [np.zeros((self.layers, batch, self.hidden), np.float32) for _ in self.inputs]

    def step(self, ids, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One graph call: ids [batch, time] -> logits [batch, time, vocab] and the new state."""
        out = self.session.run(self.outputs, {"ids": np.asarray(ids, np.int64), **dict(zip(self.inputs, state))})
        return out[0], out[1:]

    def read(self, ids: list[int], state: list[np.ndarray]) -> tuple[np.ndarray | None, list[np.ndarray]]:
        """One stream over ids, a bounded number per call: the last position's logits [vocab] and the state."""
        logits = None
        for at in range(0, len(ids), self.chunk):
            out, state = self.step([ids[at: at + self.chunk]], state)
            logits = out[0, -1]
        return logits, state

    def stream(self, text: str = "") -> "Stream":
        return Stream(self, text)


class Stream:
    """A text read so far, as the graph's state and next-token logits."""

    def __init__(self, model: Model, text: str = ""):
        self.model, self.text = model, ""
        self.logits, self.state = model.read(model.tokenizer.encode(model.manifest["tokenizer"]["start_text"]),
                                             model.zero_state())
        self.feed(text)

    def feed(self, text: str) -> None:
        """Read more text: only its tokens are run."""
        logits, self.state = self.model.read(self.model.tokenizer.encode(text), self.state)
        self.logits = self.logits if logits is None else logits
        self.text += text

    def generate(self, max_tokens: int = 50, temperature: float = 0.8, top_k: int = 0, seed: int | None = None) -> str:
        """Sample a continuation; it becomes part of the stream. temperature 0: greedy."""
        rng, tok, ids = np.random.default_rng(seed), self.model.tokenizer, []
        for _ in range(max_tokens):
            scores = self.logits.astype(np.float64)
            scores[tok.unk_id] = -np.inf
            if temperature == 0:
                token = int(scores.argmax())
            else:
                if 0 < top_k < len(scores):
                    scores[scores < np.partition(scores, -top_k)[-top_k]] = -np.inf
                p = np.exp((scores - scores.max()) / temperature)
                token = int(rng.choice(len(p), p=p / p.sum()))
            ids.append(token)
            out, self.state = self.model.step([[token]], self.state)
            self.logits = out[0, -1]
        text = tok.decode(ids)
        if tok.kind == "word" and self.text[-1:].strip() and not text.startswith("\n"):
            text = " " + text  # the next word after the text's last one
        self.text += text
        return text

    def suggest(self, k: int = 3, prefix: str = "", beam: int = 8, max_steps: int = 16) -> list[tuple[str, float]]:
        """The k most likely next words starting with `prefix`, with their probabilities.

        Word models rank their vocabulary: the probability among the words that start with the
        prefix, as `lm suggest` gives it. Char and subword models search over pieces with a
        small beam (all beams in one batched call per step): a word is a run of letters after a
        space (optional unless the text ends in a letter), finished by a piece that holds a
        character after it. Its probability is that of the text going on with exactly that word:
        at each step every open word gets the mass of all the pieces that end it.
        """
        tok = self.model.tokenizer
        probs = _softmax(self.logits)
        if tok.kind == "word":
            ids = [i for i in np.argsort(-probs) if i not in tok.special and tok.pieces[i].startswith(prefix)]
            total = float(probs[ids].sum()) if ids else 1.0
            return [(tok.pieces[i], float(probs[i]) / total) for i in ids[:k]]
        found: dict[str, float] = {}
        need_space = bool(self.text) and _is_letter(self.text[-1])
        ends = np.array([bool(p) and not _is_letter(p[0]) for p in tok.pieces])  # pieces that end a word
        texts, words, scores, state, probs = [""], [""], np.zeros(1), self.state, probs[None]  # probs [beam, vocab]
        for step in range(max_steps + len(prefix)):
            for b, word in enumerate(words):  # each open word ends here with the mass of the pieces that end it
                if word.startswith(prefix) and word:
                    found[word] = found.get(word, 0.0) + float(np.exp(scores[b]) * probs[b, ends].sum())
            total = np.log(probs + 1e-30) + scores[:, None]  # [beam, vocab]
            total[np.array([bool(w) for w in words])[:, None] & ends] = -np.inf  # counted just above
            total = total.ravel()
            floor = np.log(sorted(found.values())[-k]) if len(found) >= k else -np.inf
            top = np.argpartition(-total, min(len(total), beam * 16) - 1)[: beam * 16]
            kept = []  # (text, word, log-probability, parent beam, piece id) of the hypotheses going on
            for flat in top[np.argsort(-total[top])]:
                parent, piece = divmod(int(flat), len(tok.pieces))
                if total[flat] <= floor:
                    break
                text = texts[parent] + tok.pieces[piece]
                word, done = _word(text, need_space) if tok.pieces[piece] else (None, True)
                if word is None or not (word.startswith(prefix) or (not done and prefix.startswith(word))):
                    continue
                if done:  # a piece that finishes the word inside it ("s,")
                    found[word] = found.get(word, 0.0) + float(np.exp(total[flat]))
                elif len(kept) < beam:
                    kept.append((text, word, total[flat], parent, piece))
            if not kept or step == max_steps + len(prefix) - 1:
                break
            texts, words, scores, parents, ids = zip(*kept)
            out, state = self.model.step(np.array(ids)[:, None], [s[:, list(parents)] for s in state])
            scores, probs = np.array(scores), _softmax(out[:, -1])
        return sorted(found.items(), key=lambda wp: -wp[1])[:k]


def _is_letter(ch: str) -> bool:
    return ch in "'’" or unicodedata.category(ch)[0] in "LNM"


def _word(text: str, need_space: bool) -> tuple[str | None, bool]:
    """(the word in `text` after one leading space, whether a character after it ends it); None: not a word.

    Args:
        need_space: the text read so far ends in a letter, so a new word starts after a space.
    """
    spaced = text[:1] == " "
    body = text[1:] if spaced else text
    if body[:1] == " " or (need_space and not spaced):
        return None, True
    n = 0
    while n < len(body) and _is_letter(body[n]):
        n += 1
    if n == len(body):
        return body, False
    return (body[:n], True) if n else (None, True)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Suggest next words or continue a text with an lm export.")
    parser.add_argument("folder", help="the folder `lm export` wrote")
    parser.add_argument("text", nargs="?", default="", help="the text so far")
    parser.add_argument("-k", type=int, default=3, help="how many suggestions")
    parser.add_argument("--generate", type=int, metavar="TOKENS", help="continue the text for this many tokens")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    stream = Model(args.folder).stream(args.text)
    if args.generate:
        print(args.text + stream.generate(args.generate, args.temperature, seed=args.seed))
    else:
        for word, p in stream.suggest(args.k):
            print(f"{word}\t{p:.4f}")


if __name__ == "__main__":
    sys.exit(main())
