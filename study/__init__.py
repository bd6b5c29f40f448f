"""The search: Optuna studies (coarse -> fine -> final) and the workers that run them.

Nothing here imports TensorFlow at import time; the objective imports the model lazily.
"""
