"""select stage components."""
