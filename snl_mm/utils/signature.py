"""What a class's constructor accepts, read through chains of ``**kwargs`` passed to the parent class."""
import inspect
from typing import Any


def argument_default(cls: type, name: str) -> Any:
    """Default of constructor argument ``name`` of ``cls``, walking up the MRO while constructors forward
    ``**kwargs``; ``inspect.Parameter.empty`` when no constructor on that chain declares it (or it has no
    default)."""
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        params = inspect.signature(init).parameters
        if name in params:
            return params[name].default
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break
    return inspect.Parameter.empty


def accepts_argument(cls: type, name: str) -> bool:
    """Whether the constructor of ``cls`` takes an argument ``name`` (by name, through ``**kwargs`` chains)."""
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        params = inspect.signature(init).parameters
        if name in params:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return False
    return False
