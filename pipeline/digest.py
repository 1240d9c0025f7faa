"""The one way xenpipe fingerprints things: sha256, hex, of bytes, text, a file or a JSON value.

Fingerprints decide whether a stage reruns and whether an installed file is already in place,
so every module must hash the same value the same way (one spelling here, not six).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def of_text(text: str) -> str:
    return of_bytes(text.encode())


def of_file(path: Path) -> str:
    """A file's sha256, read in blocks (kernel images and root archives are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def of_json(obj: Any) -> str:
    """A JSON-able value's fingerprint: key order and Path-vs-str spelling do not matter."""
    return of_text(json.dumps(obj, sort_keys=True, default=str))
