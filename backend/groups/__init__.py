"""Side-by-side groups: one training run per gradient method, identical otherwise."""
