"""Fetch source trees: one generic algorithm (``base``), each VCS only its primitive steps.

``base`` holds the Vcs interface, the registry (``vcs_for``) and the algorithm; ``hg``,
``git`` and ``tarball`` each one Vcs class (a tarball becomes a one-commit git repository,
unpacked safely). Importing the package registers every VCS.
"""

from pipeline.fetch.base import (
    HEX40,
    VCS,
    Fetched,
    Vcs,
    fetch,
    fingerprint,
    in_place,
    local_edits,
    mirror_path,
    owned_changes,
    pull,
    resolved,
    vcs_for,
)
from pipeline.fetch.git import Git
from pipeline.fetch.hg import Hg
from pipeline.fetch.tarball import Tarball

__all__ = ["HEX40", "VCS", "Fetched", "Git", "Hg", "Tarball", "Vcs", "fetch", "fingerprint",
           "in_place", "local_edits", "mirror_path", "owned_changes", "pull", "resolved",
           "vcs_for"]
