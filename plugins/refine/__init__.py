"""refine stage components."""
