"""``python -m pipeline.pci``."""

import sys

from pipeline.pci import main

sys.exit(main())
