"""optimize stage components."""
