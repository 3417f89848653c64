"""Errors a user can cause and fix; the CLI turns them into one sentence and exit code 2."""


class UserError(Exception):
    """A failure caused by the user's input, files or flags."""


class DataError(UserError, ValueError):
    """Missing, corrupt or unreadable dataset files, or a failed download."""


class InputError(UserError, ValueError):
    """Bad input to a predictor: wrong shape, bad values, unreadable image."""


class CheckpointError(UserError, ValueError):
    """A missing or corrupt checkpoint or run directory."""
