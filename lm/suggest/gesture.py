"""Gesture typing: the word a finger meant by one stroke across the keys.

A swipe is a sequence of touch points over the layout (x, y in key widths). Each candidate word
has an ideal path: the straight lines through its keys' centres (a doubled letter once). Both
are resampled to the same number of points, evenly along their length, and compared in two
ways, as SHARK² does (Kristensson and Zhai, "SHARK²: a large vocabulary shorthand writing
system for pen-based computers", UIST 2004):

  - location: the mean distance between corresponding points, in key widths: where the
    stroke went;
  - shape: the same after both paths are moved to their centroid and scaled to a unit
    bounding box: what the stroke looked like, wherever and however large it was drawn.

Each distance is taken as Gaussian (deviations `location_sigma` and `shape_sigma`), so a word's
gesture score is a log-likelihood that adds to the prior's log P(w | context) as the channel's
does in lm/suggest/correct.py. Candidates are first filtered by their first and last keys (near
the swipe's ends) and by their path length, then the best by gesture and frequency are
shortlisted for the prior. Words the layout cannot type (digits, apostrophes) are never offered.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .channel import Point
from .correct import Candidate, Prior
from .index import CandidateIndex
from .layout import Layout, load_layout


@dataclass
class GestureConfig:
    """How swipes are compared with words."""

    points: int = 32  # both paths are resampled to this many points
    location_sigma: float = 0.35  # key widths: how far a stroke strays from the ideal path
    shape_sigma: float = 0.08  # the same, on paths scaled to a unit box
    end_sigma: float = 0.35  # key widths: how far a stroke starts (ends) from its first (last) key's centre
    end_radius: float = 1.2  # key widths: a word's first (last) key centre lies this near the swipe's first (last) point
    length_ratio: float = 2.5  # a word's path is at most this many times longer, or shorter, than the swipe
    shortlist: int = 24  # candidates, best by gesture and frequency, that the prior scores
    prior_weight: float = 1.0  # weight of log P(w | context) against the gesture's log-likelihood

    def validate(self) -> None:
        if not isinstance(self.points, int) or self.points < 2:
            raise ConfigError(f"a gesture needs at least 2 resampled points, not {self.points!r}")
        for name in ("location_sigma", "shape_sigma", "end_sigma", "end_radius", "prior_weight"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"the gesture's {name} must be positive, not {getattr(self, name)!r}")
        if not self.length_ratio >= 1:
            raise ConfigError(f"the gesture's length_ratio must be 1 or more, not {self.length_ratio!r}")


class GestureDecoder:
    """Ranks the words of an index for a swipe over a layout."""

    def __init__(self, index: CandidateIndex, layout: Layout | None = None, config: GestureConfig | None = None):
        self.index = index
        self.layout = layout or load_layout()
        self.config = config or GestureConfig()
        self.config.validate()
        self._by_ends: dict[tuple[str, str], list[str]] = {}  # (first, last letter) -> words
        self._groups: dict[tuple[str, str], tuple] = {}  # (first, last letter) -> words, paths, lengths
        self._indexed = -1  # how many words _by_ends was built from

    def decode(self, swipe: Sequence[Point], prior: Prior, k: int = 3) -> list[Candidate]:
        """The words the swipe most likely meant, best first, with gesture and prior scores.

        Args:
            swipe: touch points (x, y in key widths), in the order drawn.
            prior: log P(w | context) for a list of case-folded candidates.
        """
        points = np.asarray(swipe, dtype=float).reshape(-1, 2)  # [touches, 2]
        if len(points) == 0:
            return []
        words, paths = self._filtered(points)
        if not words:
            return []
        scores = self.log_likelihoods(points, paths)
        counts = self.index.count
        order = sorted(range(len(words)), key=lambda i: -(scores[i] + math.log(counts(words[i]) + 1)))
        shortlist = [words[i] for i in order[: self.config.shortlist]]
        candidates = [Candidate(w, float(scores[i]), p)
                      for w, i, p in zip(shortlist, order, prior(shortlist))]
        totals = [c.channel + self.config.prior_weight * c.prior for c in candidates]
        top = max(totals)
        norm = top + math.log(sum(math.exp(t - top) for t in totals))
        for c, t in zip(candidates, totals):
            c.posterior = math.exp(t - norm)
        candidates.sort(key=lambda c: (-c.posterior, c.word))
        return candidates[:k]

    def log_likelihoods(self, swipe: np.ndarray, paths: np.ndarray) -> np.ndarray:
        """log P(swipe | w) for each word's ideal path [words, points, 2], up to a constant:
        Gaussian in location and in shape distance, and in where the stroke starts and ends
        (a finger lands and lifts on a key more precisely than it travels between keys)."""
        c = self.config
        stroke = resample(swipe, c.points)  # [points, 2]
        location = np.linalg.norm(paths - stroke, axis=-1).mean(-1)  # [words]
        shape = np.linalg.norm(normalise(paths) - normalise(stroke), axis=-1).mean(-1)  # [words]
        ends = np.linalg.norm(paths[:, [0, -1]] - stroke[[0, -1]], axis=-1)  # [words, 2]
        return (-0.5 * (location / c.location_sigma) ** 2 - 0.5 * (shape / c.shape_sigma) ** 2
                - 0.5 * ((ends / c.end_sigma) ** 2).sum(-1))

    def ideal_path(self, word: str) -> np.ndarray:
        """The straight lines through the word's key centres (a doubled letter once), resampled: [points, 2]."""
        return resample(self._corners(word), self.config.points)

    def _corners(self, word: str) -> np.ndarray:
        keys = [self.layout.key(ch) for ch in word]
        centres = [(k.x, k.y) for i, k in enumerate(keys) if i == 0 or k is not keys[i - 1]]
        return np.array(centres, dtype=float)  # [keys, 2]

    def _filtered(self, points: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Words whose first and last keys lie near the swipe's ends and whose path is about as
        long, with their ideal paths [words, points, 2]."""
        stroke, ratio = path_length(points), self.config.length_ratio
        words, paths = [], []
        for first in self._keys_near(points[0]):
            for last in self._keys_near(points[-1]):
                group = self._group(first, last)
                if group is None:
                    continue
                group_words, group_paths, lengths = group
                # +1 key width: taps and short hops, whose lengths are near 0 either way
                keep = np.flatnonzero((lengths <= ratio * stroke + 1.0) & (stroke <= ratio * lengths + 1.0))
                words += [group_words[i] for i in keep]
                paths.append(group_paths[keep])
        return words, (np.concatenate(paths) if paths else np.zeros((0, self.config.points, 2)))

    def _keys_near(self, point: np.ndarray) -> list[str]:
        radius = self.config.end_radius
        near = [k.label for k in self.layout.keys.values()
                if k.label != " " and math.hypot(k.x - point[0], k.y - point[1]) <= radius]
        return near or [self.layout.nearest(float(point[0]), float(point[1]))]

    def _group(self, first: str, last: str):
        """(words, ideal paths [words, points, 2], path lengths [words]) for the index's words that
        start and end with these letters; worked out when first asked, again after words are added."""
        if self._indexed != len(self.index):
            letters = set(self.layout.letters)
            by_ends: dict[tuple[str, str], list[str]] = defaultdict(list)
            for word in self.index.counts:
                if set(word) <= letters:
                    by_ends[word[0], word[-1]].append(word)
            self._by_ends, self._groups, self._indexed = dict(by_ends), {}, len(self.index)
        group = self._groups.get((first, last))
        if group is None and (first, last) in self._by_ends:
            words = self._by_ends[first, last]
            corners = [self._corners(w) for w in words]
            group = self._groups[first, last] = (
                words, np.stack([resample(c, self.config.points) for c in corners]),
                np.array([path_length(c) for c in corners]))
        return group


def path_length(points: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(points, axis=0), axis=-1).sum())


def resample(points: np.ndarray, n: int) -> np.ndarray:
    """`n` points evenly spaced along a polyline: [n, 2] (one point repeated for a tap)."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    steps = np.linalg.norm(np.diff(points, axis=0), axis=-1)  # [points - 1]
    along = np.concatenate([[0.0], np.cumsum(steps)])  # [points]
    if along[-1] == 0.0:
        return np.repeat(points[:1], n, axis=0)
    at = np.linspace(0.0, along[-1], n)
    return np.stack([np.interp(at, along, points[:, 0]), np.interp(at, along, points[:, 1])], axis=-1)


def normalise(paths: np.ndarray) -> np.ndarray:
    """Paths moved to their centroid and scaled so the larger side of their bounding box is 1
    (a tap stays a point): [..., points, 2]."""
    centred = paths - paths.mean(axis=-2, keepdims=True)
    size = (paths.max(axis=-2) - paths.min(axis=-2)).max(axis=-1)  # [...]
    return centred / np.maximum(size, 1e-9)[..., None, None]
