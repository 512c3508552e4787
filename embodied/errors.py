"""User-facing errors: raised for bad input, printed by the CLI as one line without a traceback."""


class EmbodiedError(Exception):
    """Bad input or a broken file: the message says what was wrong and what to do."""
