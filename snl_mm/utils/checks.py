"""Argument checks shared by every layer: one message format, naming the owner, the argument and the value."""
from typing import Any, Optional


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (``bool`` is not one here, though Python says it is)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(value: Any, name: str, owner: str = '', minimum: int = 1, phrase: Optional[str] = None,
              note: str = '') -> int:
    """Return ``value`` when it is an integer ``>= minimum``; raise a ValueError naming it otherwise.

    Args:
        value: the argument given.
        name (str): the argument's name, as the user wrote it.
        owner (str): who takes the argument (a class name); prefixed to the message.
        minimum (int): the least valid value.
        phrase (str, optional): how to describe a valid value; ``'an integer >= minimum'`` by default.
        note (str): appended to the description, e.g. ``' (CCNet uses 2)'``.

    Raises:
        ValueError: ``'{owner}: {name} must be {phrase}{note}, got {value!r}'``.
    """
    if not is_int(value) or value < minimum:
        prefix = f'{owner}: ' if owner else ''
        phrase = phrase or f'an integer >= {minimum}'
        raise ValueError(f'{prefix}{name} must be {phrase}{note}, got {value!r}')
    return value


def check_positive_int(value: Any, name: str, owner: str = '', note: str = '') -> int:
    """:func:`check_int` with ``minimum=1``, described as "a positive integer"."""
    return check_int(value, name, owner, minimum=1, phrase='a positive integer', note=note)
