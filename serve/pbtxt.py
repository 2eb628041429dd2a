"""Protobuf text format, written from plain Python values: how a Triton config.pbtxt is put on disk.

bit-triton builds each model config as nested dicts and writes it here, so making a repository needs no
protobuf or tritonclient; tests/serve parses every file it writes with Triton's own schema
(tritonclient.grpc.model_config_pb2), which is what the server reads it with.

Values: str (quoted), bool, int, float, Enum (a bare identifier such as TYPE_FP32), dict (a message),
Map (a protobuf map field: one `key`/`value` entry per item), and lists of any of these (repeated fields).
"""

from __future__ import annotations

import json


class Enum(str):
    """An enum value, written bare: `data_type: TYPE_FP32`."""


class Map(dict):
    """A protobuf map field, written as repeated `{ key: ... value: ... }` entries."""


def _scalar(value) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string literal is a valid text-format string literal
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a protobuf text value")


def _fields(message: dict, indent: int) -> list[str]:
    pad = "  " * indent
    lines = []
    for name, value in message.items():
        if value is None:
            continue
        if isinstance(value, Map):
            entries = [{"key": key, "value": item} for key, item in value.items()]
            lines += _repeated_messages(name, entries, indent)
        elif isinstance(value, dict):
            lines += _repeated_messages(name, [value], indent)
        elif isinstance(value, list):
            if value and all(isinstance(item, dict) for item in value):
                lines += _repeated_messages(name, value, indent)
            else:
                lines.append(f"{pad}{name}: [{', '.join(_scalar(item) for item in value)}]")
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}")
    return lines


def _repeated_messages(name: str, messages: list[dict], indent: int) -> list[str]:
    pad = "  " * indent
    lines = []
    for message in messages:
        lines.append(f"{pad}{name} {{")
        lines += _fields(message, indent + 1)
        lines.append(f"{pad}}}")
    return lines


def dumps(message: dict) -> str:
    """`message` in protobuf text format, one field per line."""
    return "\n".join(_fields(message, 0)) + "\n"
