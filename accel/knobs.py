"""A hardware target's knobs: fields of its config dataclass, from which the CLI flags and the
sweep parameters are derived, so a new knob is one field.

A knob is a dataclass field made with :func:`knob`: its default, a help text,
its bounds or choices, and optionally a flag name other than the field's.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import Field
from typing import Any

from accel.errors import AccelError


def knob(
    default: Any,
    help: str,
    *,
    lo: int | None = None,
    hi: int | None = None,
    choices: tuple[str, ...] | None = None,
    flag: str | None = None,
    cli: bool = True,
) -> Any:
    """A config field that users set (``--flag`` on the command line, a sweep parameter)."""
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "flag": flag, "cli": cli}
    return dataclasses.field(default=default, metadata={"knob": meta})


def knobs(cls: type) -> list[Field]:
    """The fields of a config dataclass that are knobs, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "knob" in f.metadata]


def flag(f: Field) -> str:
    return f.metadata["knob"]["flag"] or "--" + f.name.replace("_", "-")


def kind(f: Field) -> type:
    """The knob's Python type (int, str or bool)."""
    return f.type if isinstance(f.type, type) else {"int": int, "str": str, "bool": bool}[f.type]


def check(cls: type, values: dict[str, Any], *, where: str = "") -> dict[str, Any]:
    """``values`` (knob name -> value) type- and range-checked; an unknown name is an error."""
    by_name = {f.name: f for f in knobs(cls)}
    out = {}
    for name, v in values.items():
        f = by_name.get(name)
        if f is None:
            known = ", ".join(by_name)
            raise AccelError(f"{where}unknown parameter {name!r} (known: {known})")
        meta, typ = f.metadata["knob"], kind(f)
        label = f"{where}{flag(f) if not where else name}"
        if typ is bool:
            if not isinstance(v, bool):
                raise AccelError(f"{label}: expected true or false, got {v!r}")
        elif typ is int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise AccelError(f"{label}: expected an integer, got {v!r}")
            if meta["lo"] is not None and v < meta["lo"]:
                raise AccelError(f"{label} must be at least {meta['lo']}, got {v}")
            if meta["hi"] is not None and v > meta["hi"]:
                raise AccelError(f"{label} must be at most {meta['hi']:,}, got {v:,}")
        else:
            v = str(v)
            if meta["choices"] and v not in meta["choices"]:
                raise AccelError(f"{label}: {v!r} is not one of {', '.join(meta['choices'])}")
        out[name] = v
    return out


def integer(text: str, lo: int | None = None, hi: int | None = None) -> int:
    """``text`` as an integer in ``lo..hi``, or argparse's error naming the bound."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if lo is not None and v < lo:
        raise argparse.ArgumentTypeError(f"must be at least {lo}, got {v}")
    if hi is not None and v > hi:
        raise argparse.ArgumentTypeError(f"must be at most {hi:,}, got {v:,}")
    return v


def _parse_int(f: Field):
    meta = f.metadata["knob"]

    def parse(text: str) -> int:
        return integer(text, meta["lo"], meta["hi"])

    parse.__name__ = "integer"
    return parse


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, title: str, prefix: str
) -> argparse._ArgumentGroup:
    """One flag per knob of ``cls`` in an argument group; the value lands in
    ``prefix + name`` and stays None unless given (so a flag can be told apart from its
    default, and one given for another target refused)."""
    group = parser.add_argument_group(title)
    for f in knobs(cls):
        meta = f.metadata["knob"]
        if not meta["cli"]:
            continue
        typ, dest = kind(f), prefix + f.name
        default = f" (default {f.default})" if f.default is not None else ""
        if typ is bool:
            group.add_argument(
                flag(f), dest=dest, action="store_true", default=None, help=meta["help"]
            )
        elif typ is int:
            group.add_argument(
                flag(f),
                dest=dest,
                type=_parse_int(f),
                default=None,
                metavar="N",
                help=meta["help"] + default,
            )
        else:
            group.add_argument(
                flag(f),
                dest=dest,
                choices=meta["choices"],
                default=None,
                help=meta["help"] + default,
            )
    return group


def given(cls: type, ns: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """The knobs of ``cls`` the user gave on the command line."""
    out = {}
    for f in knobs(cls):
        v = getattr(ns, prefix + f.name, None)
        if v is not None:
            out[f.name] = v
    return out
