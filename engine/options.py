"""Options dataclasses as command lines read them: each default written once, in its dataclass.

Every CLI (bit-export, bit-bench, bit-triton, bit-serve) builds its options dataclass from the parsed flags and
takes each flag's default, and the default its --help shows, from that dataclass through `field_defaults`; the
tests check that a command given no flags asks for exactly the dataclass's defaults.
"""

from __future__ import annotations

import dataclasses


def field_defaults(cls) -> dict:
    """A dataclass's field defaults by field name (a default_factory is called); fields without one are left out."""
    defaults = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return defaults


def options_from(cls, args, **fields):
    """`cls` from parsed flags: each field from the flag of its name (dest), but those given in `fields` (flags
    whose meaning is inverted or parsed further, e.g. ensembles=not args.no_ensembles)."""
    return cls(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init and f.name not in fields},
        **fields,
    )
