"""User mistakes apart from bugs.

`DDCSInputError` is the one exception for a bad input (file, folder, argument, config key): its
message names the input, and the CLI prints it as one line (`error: ...`, exit 2), the app and the
job log show it as is. Any other exception is an internal error, a bug: the CLI logs its traceback
(exit 1) and a job's log keeps it. Model constructors raise DDCSInputError for a bad configuration;
shape checks inside `forward` stay ValueError (a caller's bug). Cancellation is not an error:
see `control.Cancelled`.
"""


class DDCSInputError(ValueError):
    """A user-facing error about an input (file, folder, argument); the message names it.

    The CLI prints it as ``error: <message>`` and exits with status 2; the app shows the message.
    It subclasses ValueError, so callers that already catch ValueError keep working.

    Args:
        message: one line that names the file, folder or argument and what to do about it.
    """


def config_from_dict(cls, d: dict | None, section: str) -> dict:
    """A copy of `d` for the dataclass `cls`, refused with the known names when it holds unknown keys."""
    from dataclasses import fields

    d = dict(d or {})
    known = sorted(f.name for f in fields(cls))
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise DDCSInputError(f"unknown {section} keys {unknown} (known: {known})")
    return d
