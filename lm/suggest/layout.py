"""A keyboard layout as data: where each key is, so typing errors can be weighed by geometry.

A layout is a JSON file of keys, each with its label, centre (x, y) and size (width, height)
in key widths (lm/suggest/layouts/qwerty-en-us.json is the default). Everything the channel
model and the gesture decoder know about the keyboard comes from these numbers: distances
between key centres, the key under a touch point, and the ideal path of a word over the keys.
Labels are single characters; " " is the space bar. Lookups are case-folded.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from ..errors import ConfigError

# The bundled layouts, read through importlib.resources: a folder, or one inside a zip (the
# engine an `lm export` folder carries, lm/export/engine_zip.py).
LAYOUTS = files(__package__) / "layouts"
DEFAULT_LAYOUT = "qwerty-en-us"


@dataclass(frozen=True)
class Key:
    """One key: its label and its rectangle, in key widths."""

    label: str
    x: float  # centre
    y: float  # centre, growing downwards as on a screen
    width: float
    height: float

    def contains(self, x: float, y: float) -> bool:
        return abs(x - self.x) <= self.width / 2 and abs(y - self.y) <= self.height / 2


class Layout:
    """The keys of a keyboard, with the distances the channel model reads from them."""

    def __init__(self, name: str, keys: list[Key]):
        self.name = name
        self.keys = {k.label: k for k in keys}
        self.letters = "".join(label for label in self.keys if label != " ")

    def key(self, ch: str) -> Key | None:
        """The key that types `ch` (case-folded), or None when the layout has none."""
        return self.keys.get(ch) or self.keys.get(ch.casefold())

    def distance(self, a: str, b: str) -> float:
        """Distance between the centres of the keys of `a` and `b`, in key widths (inf if either has none)."""
        ka, kb = self.key(a), self.key(b)
        if ka is None or kb is None:
            return math.inf
        return math.hypot(ka.x - kb.x, ka.y - kb.y)

    def nearest(self, x: float, y: float) -> str:
        """The label of the key under a touch point, or of the key whose centre is closest."""
        for key in self.keys.values():
            if key.contains(x, y):
                return key.label
        return min(self.keys.values(), key=lambda k: math.hypot(k.x - x, k.y - y)).label

    def neighbour_shares(self, sigma: float) -> dict[str, dict[str, float]]:
        """For each letter key, how a slip off it spreads over the other letter keys.

        A touch aimed at key i lands around its centre with a 2-D Gaussian of deviation `sigma`
        (key widths); the share of key j is that Gaussian's density at j's centre, normalised
        over the keys other than i. Near keys take most of the slips: on QWERTY with sigma 0.5,
        "s" slips to "a" or "d" far more often than to "w" (1.4 widths up and a half across).
        """
        shares: dict[str, dict[str, float]] = {}
        for i in self.letters:
            weights = {j: math.exp(-self.distance(i, j) ** 2 / (2 * sigma**2)) for j in self.letters if j != i}
            total = sum(weights.values())
            shares[i] = {j: w / total for j, w in weights.items()}
        return shares

    def to_dict(self) -> dict:
        return {"name": self.name, "keys": [{"key": k.label, "x": k.x, "y": k.y, "width": k.width, "height": k.height}
                                            for k in self.keys.values()]}


def load_layout(source: str | Path | None = None) -> Layout:
    """A bundled layout by name (default "qwerty-en-us"), or a layout JSON file by path.

    Raises:
        ConfigError: no such layout, or the file is not a layout (keys with key, x, y, width, height).
    """
    source = DEFAULT_LAYOUT if source is None else source
    path = Path(source)
    return _read_layout(LAYOUTS / f"{source}.json" if not path.suffix else path.resolve())


def _read_layout(path) -> Layout:
    """A layout from a file: a Path, or a bundled layout's importlib.resources Traversable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        bundled = ", ".join(sorted(p.name[:-5] for p in LAYOUTS.iterdir() if p.name.endswith(".json")))
        raise ConfigError(f"cannot read the layout {path}: {e.strerror or e} — give a layout JSON file "
                          f"or a bundled name ({bundled})") from None
    except ValueError as e:
        raise ConfigError(f"the layout {path} is not JSON ({e}) — see lm/suggest/layouts/ for the format") from None
    try:
        keys = [Key(str(k["key"]), float(k["x"]), float(k["y"]), float(k["width"]), float(k["height"]))
                for k in doc["keys"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"the layout {path} has a key without key, x, y, width and height ({e!r}) — "
                          "see lm/suggest/layouts/ for the format") from None
    if not keys or any(len(k.label) != 1 or k.width <= 0 or k.height <= 0 for k in keys):
        raise ConfigError(f"the layout {path} needs keys of one character each, with a positive width and height")
    return Layout(str(doc.get("name", Path(path.name).stem)), keys)
