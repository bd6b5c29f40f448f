"""The one error type of the data layer: a setup failure, shown to the user as one line."""


class DataError(Exception):
    """Bad or missing input data. The message names the file and line (or image)."""
