"""Online and batch serving of the classical models.

- ``runtime``: one serving process's engine (models, feature reads, policy, log, router), run by the Ray
  Serve router deployment and the benchmark's bare app; ``router``: scoring a batch with fallbacks;
  ``batcher``: single requests scored together.
- ``policy`` (traffic policy, sticky assignment), ``guard`` (rollback guard), ``breaker`` (circuit
  breaker), ``model_loader`` (a model by alias), ``prediction_log``, ``tables`` (the serving schema).
- ``schemas`` and ``request_limits``: the HTTP contract; ``experiments``: reports on champion vs
  challenger; ``batch_inference``: daily batch scoring.

May import ``models``, ``features``, ``rag`` (its request schemas' limits) and ``platform``.
"""
