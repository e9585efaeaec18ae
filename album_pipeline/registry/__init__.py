"""Registry: MLflow tracking and model registration with the ``champion`` alias."""
