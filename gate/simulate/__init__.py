"""The population simulator: many readers, many days, the site's own decision engine.

- :mod:`gate.simulate.population`: the reader model (config/population.toml) and its seeded draws.
- :mod:`gate.simulate.runner`: :func:`~gate.simulate.runner.simulate`, which runs the readers
  through presets with :func:`gate.rules.paywall.decide` and :func:`gate.storage.quota.unlock`.
- :mod:`gate.simulate.report`: the comparison table, JSON, CSV and SVG.
- :mod:`gate.cli.simulate`: the ``gate simulate`` command.

Nothing heavy is imported here, so ``gate --help`` does not load NumPy.
"""

#: The longest run accepted, in days (ten years).
MAX_DAYS = 3650
