"""Thin CLI verbs: each parses its arguments and calls library functions."""
