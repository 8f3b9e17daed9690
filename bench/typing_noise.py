"""The simulated typist of bench/typing.py and bench/candidate_index.py, which now lives in the
library (lm/evaluate/typist.py, also typing for `lm eval --typing`): its noise model, sources
and defaults are documented there."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lm.evaluate.typist import NoiseConfig, Typist  # noqa: E402

__all__ = ["NoiseConfig", "Typist"]
