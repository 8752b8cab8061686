"""Training configs: the pydantic schema, the model catalog, YAML in and out, and a versioned store."""
