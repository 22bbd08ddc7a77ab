"""What a class's constructor accepts, read through chains of ``**kwargs`` passed to the parent class."""
import inspect
from typing import Any, Optional


def _declaring_parameter(cls: type, name: str) -> Optional[inspect.Parameter]:
    """The parameter ``name`` of the first constructor on ``cls``'s MRO that declares it, following the chain while
    constructors forward ``**kwargs`` to their parent; None when no constructor on that chain declares it."""
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        params = inspect.signature(init).parameters
        if name in params:
            return params[name]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None
    return None


def argument_default(cls: type, name: str) -> Any:
    """Default of constructor argument ``name`` of ``cls``; ``inspect.Parameter.empty`` when no constructor on its
    ``**kwargs`` chain declares it (or it has no default)."""
    param = _declaring_parameter(cls, name)
    return inspect.Parameter.empty if param is None else param.default


def accepts_argument(cls: type, name: str) -> bool:
    """Whether the constructor of ``cls`` takes an argument ``name`` (by name, through ``**kwargs`` chains)."""
    return _declaring_parameter(cls, name) is not None
