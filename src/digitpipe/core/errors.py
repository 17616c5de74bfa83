"""User-facing errors: one clear message, no traceback."""


class DigitpipeError(Exception):
    """An error caused by bad input or bad parameters; its message tells the user how to fix it."""
