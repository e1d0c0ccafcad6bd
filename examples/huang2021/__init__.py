"""Experiment harness for ``examples/train.py``: data, members, methods, training, evaluation, run directories.

Uses only the public API of ``ensemble_diversity`` plus torch, numpy and scikit-learn; nothing
in ``src/`` imports from here.
"""
