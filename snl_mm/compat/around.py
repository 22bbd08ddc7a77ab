"""One wrapper per upstream function that several fixes change: each fix adds a context manager around its call.

Two fixes that need the same upstream function (both :mod:`.checkpoint` and :mod:`.checkpoint_errors` act on
``CheckpointLoader.load_checkpoint``; :mod:`.atomic_save` and :mod:`.exact_resume` on the checkpoint hook's saves)
do not wrap it twice: the first :func:`around` call replaces the function by one wrapper, and every fix adds its
context manager, entered in the order the fixes were applied.
"""
import contextlib
import functools
import inspect
from typing import Callable, ContextManager, Dict


def _contexts(owner: type, name: str) -> Dict[str, Callable[..., ContextManager]]:
    current = inspect.getattr_static(owner, name)
    return getattr(getattr(current, '__func__', current), '__snl_mm_around__', {})


def around(owner: type, name: str, fix: str, context: Callable[..., ContextManager]) -> None:
    """Run ``context(*args, **kwargs)`` (the call's arguments, ``self`` or ``cls`` first) around every call of
    ``owner.<name>``, for the fix named ``fix``; idempotent."""
    current = inspect.getattr_static(owner, name)
    if not hasattr(getattr(current, '__func__', current), '__snl_mm_around__'):
        original = getattr(current, '__func__', current)
        contexts: Dict[str, Callable[..., ContextManager]] = {}

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            with contextlib.ExitStack() as stack:
                for make in list(contexts.values()):
                    stack.enter_context(make(*args, **kwargs))
                return original(*args, **kwargs)

        wrapper.__snl_mm_around__ = contexts
        wrapper.__snl_mm_patched__ = True
        setattr(owner, name, classmethod(wrapper) if isinstance(current, classmethod) else wrapper)
    _contexts(owner, name).setdefault(fix, context)


def is_around(owner: type, name: str, fix: str) -> bool:
    """Whether ``fix`` acts around ``owner.<name>``."""
    return fix in _contexts(owner, name)
