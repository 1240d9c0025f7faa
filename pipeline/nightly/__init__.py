"""``doit nightly``: update, patch, configure, build and boot; report; keep the last good run.

Nightly does not call stage functions itself: for each variant (config) it runs the real doit
graph in a child ``doit --reporter=json`` (``boot``, or ``build`` when there is nothing to
boot), so a nightly run and a hand-typed ``doit build`` share one dependency database and
one notion of "up to date". The child's JSON gives each task's result and duration; the
fetch records before and after give each source's old and new revision; the boot stage's
milestones come from ``out/boot.json`` (also ``metadata.json``'s ``boot`` stage).

Per workspace, each run leaves ``reports/runs/<run>/`` (report.json, junit.xml, the run's
logs, and for a good run its artifacts); ``reports/report.json`` and ``junit.xml`` are the
latest. ``[workspace] retention`` bounds the number of runs kept; the last good run is
never deleted.

Modules: ``run`` (the child doit per variant, its stages, the run's report), ``triage``
(revisions, merged patches, boot, ccache, logs and artifacts kept), ``report`` (report.json
and junit.xml), ``html`` (reports/index.html: the history of the runs kept, with plots).
"""

from pipeline.nightly.html import write as write_page
from pipeline.nightly.run import (
    Variant,
    collect_stages,
    document,
    expected_stages,
    interrupted_stage,
    nightly,
    run_variant,
    variants,
)
from pipeline.nightly.triage import milestones, new_revisions, prune, triage

__all__ = ["Variant", "collect_stages", "document", "expected_stages", "interrupted_stage",
           "milestones", "new_revisions", "nightly", "prune", "run_variant", "triage",
           "variants", "write_page"]
