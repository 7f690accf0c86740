"""Reproductions of the papers' experiments, with their figures."""
