"""Moved to `personas.models.offline` (0.3); this name stays as an alias for one release."""

import sys

from personas.models import offline

sys.modules[__name__] = offline
