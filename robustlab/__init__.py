"""robustlab: robustness evaluation and certification for image classifiers.

Heavy dependencies (torch, mlflow) are imported lazily; ``import robustlab`` is cheap.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
