"""Apply each source's quilt series, all or nothing, rewriting only files whose content changes.

The series is applied with GNU ``patch`` to a scratch copy of the files involved, materialised
from the VCS at the fetched revision (never from the working tree, which may hold the previous
series' result). Only when every patch applied are the real files written, and only those whose
final content differs from what is there now: an unchanged file keeps its mtime, so ``make``
rebuilds just what a patch edit really changed. Each run recomputes from pristine content, so a
run that was interrupted is repaired by the next one.

The state (``state/patch-<name>.json``) records ``files``: {path: sha256 written, or None for a
file the series deletes}, which ``sources.fetch`` uses to tell our changes from a user's edits,
and ``series_digest``, which later stages use as part of the tree's identity.

Modules: ``series`` (the series file and its fingerprint), ``diff`` (parsing patches and
mails), ``apply`` (pristine content, GNU patch, explaining failures, writing the tree).
"""

from pipeline.patch.applier import Failure, apply, pristine
from pipeline.patch.diff import Patch, Section, load, parse_diff, series_digest, strip_path, unmail
from pipeline.patch.series import SERIES, Entry, fingerprint, read_series

__all__ = ["SERIES", "Entry", "Failure", "Patch", "Section", "apply", "fingerprint", "load",
           "parse_diff", "pristine", "read_series", "series_digest", "strip_path", "unmail"]
