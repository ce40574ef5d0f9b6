"""The command line. It imports the library; nothing in the library imports it.

``main`` is the ``personas`` entry point; each sub-command lives in a module of its own.
"""

from personas.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
