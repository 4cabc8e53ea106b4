"""One-line error messages: every entry point reports a user error as a single line, never a traceback."""

from __future__ import annotations


def first_line(error: BaseException | str) -> str:
    """The first non-blank line of an exception's message (or of a string), stripped.

    Never empty: some libraries raise with no message at all (``torch.load`` on a zero-byte file), and
    then the exception's class name stands in, so the line still says what went wrong.
    """
    text = str(error)
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__ if isinstance(error, BaseException) else "unknown error"


def unwrap(error: BaseException) -> BaseException:
    """The error that says what is wrong, with wrappers that only say *where* it happened removed.

    Hydra's InstantiationException ("Error in call to target ...") wraps a constructor's own error, so that
    cause is the one to report. Other errors are kept as raised: their causes are low-level details (a
    ``VideoError`` names the file, the FFmpeg error it was raised from does not).
    """
    while error.__cause__ is not None and type(error).__name__ == "InstantiationException":
        error = error.__cause__
    return error


def one_line(error: BaseException, with_type: bool = False) -> str:
    """``first_line`` of the unwrapped error, prefixed with its class name when ``with_type``."""
    error = unwrap(error)
    return f"{type(error).__name__}: {first_line(error)}" if with_type else first_line(error)
