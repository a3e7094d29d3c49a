"""Offline evaluation of the lists and stars the job publishes.

- ``protocols``: rating (RMSE), ranking (time split) and the grid search;
- ``prequential``: the test-then-learn replay;
- ``cli``: ``python -m streaming.evaluation``.
"""
