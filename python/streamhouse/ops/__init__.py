"""Operator tools: sizing and diagnosis."""
