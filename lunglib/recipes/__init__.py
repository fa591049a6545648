"""Recipes: complete, validated experiments as library functions.

A recipe trains, predicts, chooses its thresholds and post-processing on validation patients and
scores the test patients; benchmarks and notebooks call it and print its tables.
"""
