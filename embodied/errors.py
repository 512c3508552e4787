"""User-facing errors: raised for bad input, printed by the CLI as one line without a traceback."""


class EmbodiedError(Exception):
    """Bad input or a broken file: the message says what was wrong and what to do."""


class TrainingDiverged(EmbodiedError, FloatingPointError):
    """An update left a network with NaN or infinite parameters (a learning rate too large for the losses' scale):
    one error line at the command line, a ``FloatingPointError`` to numeric code."""


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's text on one short line: libraries (``load_state_dict``, HDF5) spread theirs over many."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
