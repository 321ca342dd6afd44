"""Pipelines: what a command does, above the checks and below the CLI.

- :mod:`.evaluate`: load a model and data, run a suite of checks, write the scorecard.
- :mod:`.defend`: load -> evaluate -> train -> save -> evaluate -> compare.
- :mod:`.certify`: randomized-smoothing certification as a one-check suite through :mod:`.evaluate`.
- :mod:`.postrun`: what follows a written scorecard: the gate, the report, MLflow.

Commands (:mod:`robustlab.commands`) parse options into a pipeline's typed, frozen config, call the
pipeline and turn its outcome into an exit code. Algorithm packages (attacks, corruptions, ood,
smoothing, defenses) never import a pipeline, the runner, the checks or the scorecard
(``tests/test_layering.py``).
"""
