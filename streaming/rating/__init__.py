"""The rating model behind the predicted stars.

- ``fm``: the Bayesian factorization machine (``myfm``) and its per-user solve;
- ``fitter``: fitting it from settings, beside the stream, and scoring it.
"""
