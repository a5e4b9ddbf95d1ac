"""Vireo benchmarks (see README.md)."""
