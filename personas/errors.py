"""One root exception for everything `personas` raises on purpose.

Every message says what was received, what was expected, and how to fix it.
`PersonasError` subclasses `ValueError`, so code that already catches bad values keeps working.
"""

from __future__ import annotations


class PersonasError(ValueError):
    """Root of all errors raised by personas."""


class DataError(PersonasError):
    """The responses, labels or groups are malformed (missing columns, one class only, NaN scores...)."""


class SiteMismatchError(PersonasError):
    """An SAE does not fit the model site it is applied to (hook name, width or model id differ)."""


class ModelLoadError(PersonasError):
    """A model or SAE could not be loaded (unknown name, no network, missing files)."""


class CacheError(PersonasError):
    """An activation cache is corrupt, truncated, or was made from different inputs."""
