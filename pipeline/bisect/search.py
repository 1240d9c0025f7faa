"""The bisection itself, with no I/O: an ordered list of candidates, the verdicts given so
far, which one to try next and what the verdicts prove.

The candidates are the revisions (or patch counts) in bad that good lacks, oldest first; the
last one is the bad end, which the nightly saw fail, the good end (index -1) is outside the
list. ``skip`` is ``git bisect skip``: a candidate that cannot be judged (it does not build,
its patches do not apply) is never tried again and the next try is the untried one nearest
the middle; when only skipped candidates are left between the last good and the first bad,
the result names them all rather than guess.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

GOOD, BAD, SKIP = "good", "bad", "skip"
VERDICTS = (GOOD, BAD, SKIP)


@dataclass(frozen=True)
class Outcome:
    """What the verdicts prove: *first_bad* when exactly one candidate can be it; else
    *suspects*, the skipped candidates (and the first bad) it may be among. *reproduced*: a
    candidate was judged bad (False: the bad end passed here, or could not be judged)."""

    first_bad: str | None
    suspects: tuple[str, ...]
    reproduced: bool


@dataclass(frozen=True)
class Search:
    candidates: tuple[str, ...]
    verdicts: Mapping[str, str]

    def bounds(self) -> tuple[int, int]:
        """(index of the last good, -1 for the good end; index of the first bad, the bad
        end when none was tried bad)."""
        bad = [i for i, c in enumerate(self.candidates) if self.verdicts.get(c) == BAD]
        hi = min(bad, default=len(self.candidates) - 1)
        good = [i for i, c in enumerate(self.candidates[:hi]) if self.verdicts.get(c) == GOOD]
        return max(good, default=-1), hi

    def next(self) -> str | None:
        """The candidate to try next (None: the search is over). Inside the range the one
        nearest the middle not yet tried; the bad end itself only once every other candidate
        was judged, to confirm it (it may pass: another source broke the run)."""
        lo, hi = self.bounds()
        untried = [i for i in range(lo + 1, hi) if self.candidates[i] not in self.verdicts]
        if untried:
            mid = (lo + hi) / 2
            return self.candidates[min(untried, key=lambda i: (abs(i - mid), i))]
        end = self.candidates[hi]
        return end if end not in self.verdicts else None

    def outcome(self) -> Outcome:
        """What the verdicts prove once ``next`` is None (before: what they prove so far)."""
        lo, hi = self.bounds()
        reproduced = self.verdicts.get(self.candidates[hi]) == BAD
        suspects = tuple(c for c in self.candidates[lo + 1:hi + 1]
                         if self.verdicts.get(c) != GOOD)
        return Outcome(suspects[0] if reproduced and len(suspects) == 1 else None, suspects,
                       reproduced)

    def steps_left(self) -> int:
        """About how many more tries: log2 of the untried range, plus the bad end's."""
        lo, hi = self.bounds()
        width = sum(1 for i in range(lo + 1, hi) if self.candidates[i] not in self.verdicts)
        end = 0 if self.candidates[hi] in self.verdicts else 1
        return (math.ceil(math.log2(width + 1)) if width else 0) + end


def most_steps(n: int) -> int:
    """The most tries a search of *n* candidates takes without skips: ⌈log2 n⌉ + 1 (the
    bad end confirmed)."""
    return math.ceil(math.log2(n)) + 1 if n > 1 else 1

