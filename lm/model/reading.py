"""Reading a text through the model: the state after it and the logits of what comes next,
in chunks of bounded size (the suggester, the sampler and the keyboard simulation read prompts so)."""
from __future__ import annotations

import torch

READ_LOGITS_BUDGET = 2**22  # floats of [1, time, vocab] logits one call of read_ids may build (16 MB)


def read_chunk(vocab_size: int) -> int:
    """Tokens per model call when reading a text: keeps the logits within READ_LOGITS_BUDGET."""
    return max(16, min(2048, READ_LOGITS_BUDGET // vocab_size))


@torch.inference_mode()
def read_ids(model, ids: list[int], state, chunk: int):
    """Advance the state over token ids, `chunk` tokens per model call (see read_chunk).

    Only the last position's logits are kept, so a text of megabytes costs time, not memory.
    Returns (state, [vocab] next-token logits as fp32, or None when `ids` is empty).
    """
    device = next(model.parameters()).device
    logits = None
    for at in range(0, len(ids), chunk):
        x = torch.tensor([ids[at: at + chunk]], dtype=torch.long, device=device)  # [1, time]
        out, state = model(x, state)  # [1, time, vocab]
        logits = out[0, -1].to(torch.float32, copy=True)  # a copy: a view would keep the chunk's logits alive
    return state, logits


@torch.inference_mode()
def read_features(model, ids: list[int], state, chunk: int):
    """Like `read_ids`, also keeping what the output layer read at every position.

    Returns (state, features [len(ids), emb] fp32, [vocab] next-token logits fp32); ids must not be empty.
    """
    device = next(model.parameters()).device
    features = []
    for at in range(0, len(ids), chunk):
        x = torch.tensor([ids[at: at + chunk]], dtype=torch.long, device=device)  # [1, time]
        h, state = model.features(x, state)  # [1, time, emb]
        features.append(h[0].float())
    logits = model.output(h[:, -1:])[0, -1].float()  # [vocab]
    return state, torch.cat(features), logits
