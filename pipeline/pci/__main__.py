"""``python -m pipeline.pci``."""

import sys

from pipeline.pci.cli import main

sys.exit(main())
