"""One worker of tests/test_distributed.py: trains as a JSON file says, then reports how it ended.

Run under torchrun (or lm.training.distributed.launch) as `python ddp_worker.py SPEC.json`. Each worker
writes REPORT-rank<r>.json (its last step and why it stopped) and params-rank<r>.pt (its
final weights), so a test can compare the workers with each other and with one process.
"""
import json
import sys
from pathlib import Path

import torch

import lm
import lm.training.distributed
import lm.training.trainer


def main(spec_path: str) -> None:
    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    models = []
    wrap = lm.training.distributed.training_loss

    def keep_model(model):  # the trainer hands the model over here: keep it to report its weights
        models.append(model)
        return wrap(model)

    lm.training.trainer.distributed.training_loss = keep_model
    with lm.training.distributed.session():
        result = lm.train(
            lm.load_corpus([spec["corpus"]]), spec["out"],
            model_config=lm.ModelConfig(**spec["model"]),
            tokenizer_config=lm.TokenizerConfig(kind="char"),
            config=lm.TrainConfig(**spec["train"]),
            resume=spec.get("resume", False),
        )
        rank = lm.training.distributed.rank()
    report = Path(spec["report"])
    torch.save({k: v.detach().clone() for k, v in models[-1].state_dict().items()}, report / f"params-rank{rank}.pt")
    (report / f"REPORT-rank{rank}.json").write_text(json.dumps({"step": result.step, "stop": str(result.stop_reason)}))
    lm.training.distributed.leave(0)  # as `lm train` does: the interpreter's teardown can abort a finished worker


if __name__ == "__main__":
    main(sys.argv[1])
