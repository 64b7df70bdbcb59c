"""Benchmarks of gate, run from the checkout (`make bench`); not part of the installed package."""
