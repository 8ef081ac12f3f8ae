"""acquire stage components."""
