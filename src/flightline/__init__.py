"""flightline: an ML platform on DAGs, from raw data to live traffic.

Subpackages by capability (see docs/development.md for the map and the import rule):

- ``platform``: settings, errors, processes, PostgreSQL and the servers; imports nothing above it.
- ``data``, ``features``, ``models``, ``serving``, ``rag``: the capabilities; each imports ``platform``
  and the capabilities below it, never ``cli``.
- ``cli``: the ``flightline`` command, an entry point like ``dags/``, ``ray_serve/`` and ``benchmarks/``.
"""
