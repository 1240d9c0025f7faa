"""``python -m pipeline.boot``."""

import sys

from pipeline.boot.cli import main

sys.exit(main())
