"""Models from training set to registry: training (``training``), holdout evaluation and the promotion rule
(``evaluation``), the MLflow registry with its ``champion``/``challenger`` aliases (``registry``), and
whether a version can serve flights (``servable``).

May import ``features``, ``data`` and ``platform``.
"""
