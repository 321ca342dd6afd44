"""MLflow tracking of scorecards (mlflow is imported only when a function here is called)."""

from .keys import checked_metric_keys, name_key
from .mlflow_log import (
    DEFAULT_EXPERIMENT,
    is_run_reference,
    load_baseline,
    load_scorecard_from_run,
    log_scorecard,
    resolve_tracking_uri,
    write_per_sample_csv,
)

__all__ = [
    "DEFAULT_EXPERIMENT", "checked_metric_keys", "is_run_reference", "load_baseline", "load_scorecard_from_run",
    "log_scorecard", "name_key", "resolve_tracking_uri", "write_per_sample_csv",
]
