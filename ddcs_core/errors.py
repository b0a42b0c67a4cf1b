"""One exception type for every bad input, so the CLI and the app can show its message as is."""


class DDCSInputError(ValueError):
    """A user-facing error about an input (file, folder, argument); the message names it."""


def config_from_dict(cls, d: dict | None, section: str) -> dict:
    """A copy of `d` for the dataclass `cls`, refused with the known names when it holds unknown keys."""
    from dataclasses import fields

    d = dict(d or {})
    known = sorted(f.name for f in fields(cls))
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise DDCSInputError(f"unknown {section} keys {unknown} (known: {known})")
    return d
