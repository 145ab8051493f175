"""Measurement commands whose JSON results the book plots (run them on a GPU)."""
