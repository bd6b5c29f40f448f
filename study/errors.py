"""The two kinds of failure.

SetupError: the setup is wrong (bad storage URL, unknown study, data that does not
match the study). The process stops at once with one line and exit code 1.

TrialFailed: one trial failed (NaN loss, out of memory). Optuna marks it FAIL with its
reason as the `fail_reason` user attribute; the worker goes on with the next trial.
"""


class SetupError(Exception):
    """Stop the process: the message is one line naming the likely cause."""


class TrialFailed(Exception):
    """Fail this trial only; the worker continues."""
