"""MLflow tracking: prepare the store, create experiments, and query runs and metric histories."""
