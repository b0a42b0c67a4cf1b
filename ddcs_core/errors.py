"""One exception type for every bad input, so the CLI and the app can show its message as is."""


class DDCSInputError(ValueError):
    """A user-facing error about an input (file, folder, argument); the message names it."""
