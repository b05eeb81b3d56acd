"""The bootstrap model: a small causal LM that the project trains itself, offline, on a synthetic
corpus it also generates (``corpus``), since no weights can be downloaded here.
``python -m generator.bootstrap.train --seed 0 --out DIR`` reproduces the shipped checkpoint."""
