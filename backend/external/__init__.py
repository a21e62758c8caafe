"""Runs of kind ``external``: a user's own training loop reports through ``anode_lab.track``; no worker runs them."""
