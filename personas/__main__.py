"""``python -m personas``: the command line."""

import sys

from personas.cli.main import main

sys.exit(main())
