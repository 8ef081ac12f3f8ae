"""generate stage components."""
