"""The report: `python -m sweeper.compare` reads what a sweep left (trial dirs, an Optuna study) into records,
prints them as one table, and writes CSV, JSON and plots. It only reads; it never runs a trial."""
from sweeper.compare.cli import main

__all__ = ["main"]
