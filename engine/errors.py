"""The one exception type users see. Every failure says what was expected and what to do."""


class BitError(Exception):
    """A user-facing failure: bad input, a missing dependency, a parity breach. The CLI prints it on one line."""


def missing_dependency(module: str, extra: str) -> BitError:
    return BitError(f"{module} is not installed; install it with: pip install 'bit-trt[{extra}]'")


def require(module: str, extra: str):
    """Import an optional dependency on first use, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise missing_dependency(module, extra) from None
