"""Does the continuous cache make generated text more repetitive?

The cache raises the odds of what followed similar contexts a moment ago: right for a keyboard
(names and topic words come back), and a risk for sampling, which can fall into loops. This
draws samples from the same prompts and seeds with and without the checkpoint's tuned cache,
with `lm generate`'s default decoding (lm.suggest.sampler.GenerationConfig: temperature, top-k/top-p,
repetition guard), and reports how repetitive they are:

  - repeated n-grams: the share of a sample's n-grams (n = 2, 3, 4, in tokens) that already
    occurred earlier in the same sample (Welleck et al. 2020 call it seq-rep-n);
  - distinct-n: distinct n-grams over all n-grams of all samples (Li et al. 2016).

    python bench/cache_generation.py -c checkpoints/keyboard-quality --samples 20 --tokens 200
"""
from __future__ import annotations

import argparse
from dataclasses import asdict
import json
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
from lm.mix.cache import CacheConfig, mix  # noqa: E402
import lm  # noqa: E402
from lm.suggest.sampler import GenerationConfig, next_tokens  # noqa: E402
from lm.data.text import START_TEXT  # noqa: E402

PROMPTS = ["The", "In 1998 ,", "The city", "He was", "The game", "She", "During the war", "The album"]


@torch.inference_mode()
def sample(model, tokenizer, prompt: str, tokens: int, cache: CacheConfig, config: GenerationConfig, seed: int) -> list[int]:
    """One sample of `tokens` tokens after the prompt; the cache (when on) remembers prompt and sample."""
    generator = torch.Generator().manual_seed(seed)
    ids = tokenizer.encode(START_TEXT + prompt)
    features, state = model.features(torch.tensor([ids]))
    keys, values = features[0, :-1], torch.tensor(ids[1:])
    query, logits = features[0, -1:], model.output(features[:, -1:])[0]
    out = []
    for _ in range(tokens):
        scores = mix(logits, query, keys[-cache.window:], values[-cache.window:], cache) if cache.enabled else logits.float()
        recent = torch.tensor([(ids + out)[-config.repetition_window:]])
        token = next_tokens(scores, recent, config, generator).item()
        out.append(token)
        keys, values = torch.cat([keys, query]), torch.cat([values, torch.tensor([token])])
        features, state = model.features(torch.tensor([[token]]), state)
        query, logits = features[0], model.output(features)[0]
    return out


def repetition(samples: list[list[int]]) -> dict:
    report = {}
    for n in (2, 3, 4):
        repeated, total, everything = 0, 0, []
        for ids in samples:
            grams = [tuple(ids[i: i + n]) for i in range(len(ids) - n + 1)]
            seen = set()
            for g in grams:
                repeated += g in seen
                seen.add(g)
            total += len(grams)
            everything += grams
        report[f"repeated_{n}grams"] = repeated / max(total, 1)
        report[f"distinct_{n}"] = len(set(everything)) / max(len(everything), 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", "-c", required=True)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "cache_generation.json")
    args = parser.parse_args()
    loaded = lm.load(args.checkpoint)
    model, tokenizer = loaded.model, loaded.tokenizer
    cache, config = loaded.cache, GenerationConfig()
    if not cache.enabled:
        sys.exit(f"{args.checkpoint} has no tuned cache — run lm eval --tune-cache first")
    report = {"checkpoint": args.checkpoint, "cache": cache.to_dict(), "decoding": asdict(config),
              "samples": args.samples, "tokens": args.tokens}
    for name, setting in (("without", CacheConfig()), ("with", cache)):
        drawn = [sample(model, tokenizer, PROMPTS[i % len(PROMPTS)], args.tokens, setting, config, seed=i)
                 for i in range(args.samples)]
        report[name] = repetition(drawn)
        report[name]["example"] = tokenizer.decode(drawn[0])[:300]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"{'':12}" + "".join(f"{k:>18}" for k in report["without"] if k != "example"))
    for name in ("without", "with"):
        print(f"{name + ' cache':12}" + "".join(f"{v:>18.3f}" for k, v in report[name].items() if k != "example"))


if __name__ == "__main__":
    main()
