"""`python -m personas` runs the command line."""

import sys

from personas.cli import main

sys.exit(main())
