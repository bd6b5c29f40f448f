"""The one error type of the model layer: a setup failure, shown to the user as one line."""


class ModelError(Exception):
    """A model cannot be saved or loaded. The message names the folder and the cause."""
