"""``python -m ragprune``: the same command line as the ``ragprune`` script (:mod:`ragprune.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
