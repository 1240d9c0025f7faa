"""``python -m pipeline ARGS``: the same as the ``doit`` command xenpipe installs."""

from pipeline.startup import main

main()
