"""evaluate stage components."""
