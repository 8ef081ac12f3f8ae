"""Model providers: they build a run's base policy and load its checkpoints."""
