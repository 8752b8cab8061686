"""Model registry: the pyfunc wrapper, logging it with a signature, registration and aliases.

Import `workbench.registry.registration` for the functions; this package module stays free of MLflow
imports so the app starts fast.
"""
