"""Command-line jobs that run anywhere Python runs: locally, under torchrun, or as Databricks jobs."""
