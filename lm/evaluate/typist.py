"""A simulated typist: fingers on a phone keyboard, with their slips (lm eval --typing, bench/typing.py).

This model is deliberately NOT the decoder's (lm/suggest/channel.py): it is separate code with
other parameters, and it makes errors the way the literature describes them rather than the way
the decoder scores them, so the benchmark does not grade the decoder on its own assumptions.

Tapping. Each intended letter is a touch drawn around its key's centre from a 2-D Gaussian
(sigma_x, sigma_y in key widths, the y spread larger: touches scatter more along a finger's
direction of travel; Azenkot and Zhai, "Touch behavior with different postures on soft
smartphone keyboards", MobileHCI 2012); the key under the touch is what gets typed, so
substitutions fall on neighbours as often as the geometry makes them. With the defaults about
3 % of letters land on another key. On top of that, at rates of the size reported for mobile
typing (Palin et al., "How do people type on mobile devices? Observations from a study with
37,000 volunteers", MobileHCI 2019: about 2 % of characters wrong after the keyboard's own
correction, several times that before it), a letter is left out, an extra touch lands near the
key, a key is hit twice, two letters come out swapped, or the space after a word is missed
("inthe"). Only words whose letters all have keys are typed (lm/evaluate/typing.py skips the rest).

Swiping. The finger passes each of the word's keys (a doubled letter once) near its centre
(turn_sigma), travels between them along a bowed curve rather than the straight line the decoder
assumes (a quadratic Bézier whose control point is pushed sideways by bow times the segment
length), and the sensor reports points every 1/points_per_key of a key width along the way,
each with a little jitter.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from ..suggest.layout import Layout


@dataclass
class NoiseConfig:
    """The typist's slips (probabilities per letter unless said otherwise)."""

    sigma_x: float = 0.20  # key widths: touch spread across a key
    sigma_y: float = 0.26  # key widths: touch spread up and down (keys are 1.4 widths tall)
    omission: float = 0.008  # a letter not typed
    insertion: float = 0.006  # an extra touch near the key (spread extra_sigma)
    extra_sigma: float = 0.8
    double_tap: float = 0.004  # the key registers twice
    swap: float = 0.004  # this letter and the next come out in the other order
    missed_space: float = 0.01  # per word: the space after it is not typed
    turn_sigma: float = 0.22  # swipes: key widths between a turn and its key's centre
    bow: float = 0.15  # swipes: sideways push of each segment's midpoint, times its length (Gaussian)
    point_jitter: float = 0.05  # swipes: key widths of sensor noise per point
    points_per_key: float = 6.0  # swipes: sensor points per key width travelled


class Typist:
    """Types words with slips, seeded: the same seed gives the same text."""

    def __init__(self, layout: Layout, config: NoiseConfig | None = None, seed: int = 0):
        self.layout = layout
        self.config = config or NoiseConfig()
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)

    def tap(self, word: str) -> tuple[str, list[tuple[float, float]]]:
        """The characters a word comes out as, and their touch points (x, y in key widths), one
        per typed character. Every letter of the word must have a key on the layout."""
        c, rng = self.config, self.rng
        typed: list[str] = []
        touches: list[tuple[float, float]] = []
        for ch in word:
            key = self.layout.key(ch)
            if rng.random() < c.omission:
                continue
            self._touch(ch, key, c.sigma_x, c.sigma_y, typed, touches)
            if rng.random() < c.double_tap:
                typed.append(typed[-1])
                touches.append(touches[-1])
            if rng.random() < c.insertion:
                self._touch(ch, key, c.extra_sigma, c.extra_sigma, typed, touches)
        for i in range(len(typed) - 1):
            if rng.random() < c.swap:
                typed[i], typed[i + 1] = typed[i + 1], typed[i]
                touches[i], touches[i + 1] = touches[i + 1], touches[i]
        return "".join(typed), touches

    def misses_space(self) -> bool:
        return self.rng.random() < self.config.missed_space

    def _touch(self, ch, key, sigma_x, sigma_y, typed, touches) -> None:
        x, y = self.rng.gauss(key.x, sigma_x), self.rng.gauss(key.y, sigma_y)
        hit = self.layout.nearest(x, y)
        if hit == " ":  # the space bar under a letter's touch: the letter's row wins (no space inside words)
            hit = key.label
        typed.append(hit.upper() if ch.isupper() else hit)
        touches.append((x, y))

    def swipe(self, word: str) -> np.ndarray:
        """The points a swipe over the word reports: [points, 2] in key widths."""
        c, rng = self.config, self.np_rng
        keys = [self.layout.key(ch) for ch in word]
        corners = np.array([(k.x, k.y) for i, k in enumerate(keys) if i == 0 or k is not keys[i - 1]])
        corners = corners + rng.normal(0.0, c.turn_sigma, corners.shape)
        points = [corners[:1]]
        for a, b in zip(corners, corners[1:]):
            length = float(np.linalg.norm(b - a))
            normal = np.array([-(b - a)[1], (b - a)[0]]) / max(length, 1e-9)
            control = (a + b) / 2 + normal * rng.normal(0.0, c.bow) * length
            steps = max(int(math.ceil(length * c.points_per_key)), 1)
            t = np.linspace(0.0, 1.0, steps + 1)[1:, None]
            points.append((1 - t) ** 2 * a + 2 * (1 - t) * t * control + t**2 * b)  # quadratic Bézier
        path = np.concatenate(points)
        return path + rng.normal(0.0, c.point_jitter, path.shape)
