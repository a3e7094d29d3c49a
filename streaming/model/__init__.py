"""The list model: fitting ALS on the store, versions, fold-in and the lists.

- ``versions``: a model version (ALS fit, popular list, metadata), saved and loaded;
- ``holdout``: the held-out split and each version's evaluation; ``metrics``: the ranking metrics;
- ``foldin`` / ``lists`` / ``topn``: the ALS user step, lists for many users, top-K;
- ``transitions`` / ``blend``: the short-term part and the hybrid score;
- ``policy``: when a retrain is due.
"""
