"""Training with the Hugging Face Trainer: datasets, collators, callbacks, the run loop and the launcher.

Import the submodules directly; ``launch`` and ``state`` stay light so the app can import them at start-up.
"""
