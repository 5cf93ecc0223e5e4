"""The ``flightline`` command: the root commands in ``main``, one module per command group (``models``,
``serve``, ``rag``) and the demo's steps (``demo``). An entry point: it may import any package, and none
imports it.
"""

from flightline.cli.main import app, main

__all__ = ["app", "main"]
