"""Benchmarks of airflow-provider-shortint (not tests): each prints measured figures, ratios and goals.

Run ``python -m bench`` (all) or ``python -m bench NAME...``; see docs/BENCHMARKS.md.
"""
