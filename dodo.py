"""xenpipe's doit entry point: `doit list`, `doit build config=configs/site.toml`, ...

All tasks live in pipeline/tasks.py; the config is chosen with `config=PATH`,
else $XENPIPE_CONFIG, else configs/default.toml.
"""

from pipeline.tasks import *  # noqa: F403
from pipeline.tasks import DOIT_CONFIG  # noqa: F401
