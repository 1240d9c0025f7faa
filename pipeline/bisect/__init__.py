"""``doit bisect``: which upstream changeset, or which patch of a series, broke the run.

- ``search``: the bisection with no I/O (candidates, good/bad/skip verdicts, next, outcome)
- ``step``: one step, the nightly's graph in a child doit with a source pinned or a series
  cut, and its verdict; ``step_config`` is how that child sees the pins
- ``report``: the one line and ``reports/bisect.json``
- ``session``: arguments, defaults from the nightly history, the resumable state, the loop
"""

from pipeline.bisect.search import BAD, GOOD, SKIP, Outcome, Search, most_steps
from pipeline.bisect.session import VARS, bisect
from pipeline.bisect.step import STEP_ENV, step_config

__all__ = ["BAD", "GOOD", "SKIP", "STEP_ENV", "VARS", "Outcome", "Search", "bisect",
           "most_steps", "step_config"]
