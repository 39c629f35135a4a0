"""The one exception type users see: a one-line message naming what is wrong."""


class AccelError(Exception):
    """A problem with the user's model, input, option or environment.

    The CLI prints its message on one line and exits non-zero, without a
    traceback; anything else escaping is a bug in accel.
    """
