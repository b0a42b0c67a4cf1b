"""One exception type for every bad input, so the CLI and the app can show its message as is."""


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
