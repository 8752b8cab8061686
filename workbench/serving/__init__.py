"""Request and response formats of the model endpoint, the local endpoint process and its client."""
