"""Re-running a case with another model of the models folder, before sign-off."""
