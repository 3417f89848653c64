"""Errors a user can cause and fix; the CLI turns them into one sentence and exit code 2."""


class UserError(Exception):
    """A failure caused by the user's input, files or flags."""


class DataError(UserError, ValueError):
    """Missing, corrupt or unreadable dataset files, or a failed download."""


class InputError(UserError, ValueError):
    """Bad input to a predictor: wrong shape, bad values, unreadable image."""


class CheckpointError(UserError, ValueError):
    """A missing or corrupt checkpoint or run directory."""


def first_line(error: Exception, limit: int = 300) -> str:
    """The first line of an error from a library, short enough to end one of our sentences."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text[:limit].rstrip(".") + "."


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception an error was raised from: a library's wrappers name less than the cause."""
    seen = {id(error)}
    while error.__cause__ is not None and id(error.__cause__) not in seen:  # a cycle ends the walk
        error = error.__cause__
        seen.add(id(error))
    return error
