"""``python -m pipeline.boot``."""

import sys

from pipeline.boot import main

sys.exit(main())
