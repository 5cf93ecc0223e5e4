"""Features, defined once for training and serving: the definitions (``definitions``: names, views,
request-time features), the Feast wrapper (``store``), the online reader serving uses (``online``), and
windowed features at scale on Spark (``spark``).

May import ``data`` and ``platform``.
"""
