"""Shared test helpers (importable as ``helpers``: ``pythonpath = ["tests"]`` in pyproject).

- :mod:`helpers.data`: where the test data lives and small sets of real structures;
- :mod:`helpers.lightning`: a quiet CPU trainer and a minimal Lightning checkpoint writer;
- :mod:`helpers.layering`: the package's import graph and its layer rules.

Fixtures stay in ``tests/conftest.py``.
"""
