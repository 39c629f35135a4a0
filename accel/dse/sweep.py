"""Sweep files: a model, ranges of parameters, and what to evaluate at each point.

```yaml
name: nm-engine                  # optional (default: the file's stem)
model: nm_sparse                 # a zoo name
arch: engine                     # engine | dataflow (default: engine for nm_sparse, dataflow else)
params:                          # each a value, a list, or a range
  rows: [4, 8, 16]
  cols: {from: 8, to: 32, step: 8}
  a_depth: {from: 256, to: 2048, times: 2}    # geometric
  pattern: [dense, "2:4", "2:8", "1:4"]
  device: ulx3s-85f
evaluate:
  batch: 64                      # samples per timed run (and per RTL check)
  clock_mhz: 25                  # for throughput and ns (default: the board's clock)
  rtl: {points: 2, seed: 0}      # RTL simulation of a random sample of points
  synth: {points: 0}             # real yosys synth_ecp5 of a random sample (or all: true)
  implement: {points: 0}         # full yosys + nextpnr of a random sample (slow)
```

The sweep is the cross product of the parameters. Every problem with the file
is an :class:`AccelError` naming the key, before any point runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accel.errors import AccelError

DEVICE = "ulx3s-85f"


def parameters(model: str, arch: str) -> dict[str, tuple[type, Any]]:
    """name -> (type, default) of a sweep's parameters: the target's knobs (default None:
    as the target configures itself for the point's graph and model), the model's own
    (:mod:`accel.zoo.sweeps`), and the device."""
    from accel import targets
    from accel.knobs import kind, knobs
    from accel.zoo.sweeps import spec

    out: dict[str, tuple[type, Any]] = {
        f.name: (kind(f), None) for f in knobs(targets.get(arch).Config)
    }
    out.update(spec(model).params)
    out["device"] = (str, DEVICE)
    return out


TOP_KEYS = ("name", "model", "arch", "params", "evaluate")
CHECKS = ("rtl", "synth", "implement")
EVALUATE_KEYS = ("batch", "clock_mhz", "quality_samples", "seed", *CHECKS)
MAX_POINTS = 100_000
# bumped when a change to the evaluation changes the numbers of existing points
EVAL_VERSION = 2


@dataclass(frozen=True)
class Check:
    """Run a real tool on ``points`` points drawn with ``seed`` (or on all)."""

    points: int = 0
    seed: int = 0
    all: bool = False


@dataclass
class Sweep:
    name: str
    model: str
    arch: str
    axes: dict[str, list]  # the swept parameters, in file order
    fixed: dict[str, Any]  # every other parameter's value
    batch: int = 64
    clock_mhz: float | None = None
    quality_samples: int = 2000
    seed: int = 0
    checks: dict[str, Check] = field(default_factory=dict)

    def points(self) -> list[dict[str, Any]]:
        """Every point: the full parameter dict, axes varying fastest last."""
        names = list(self.axes)
        return [
            {**self.fixed, **dict(zip(names, combo, strict=True))}
            for combo in itertools.product(*(self.axes[n] for n in names))
        ]

    def settings(self) -> dict[str, Any]:
        """What, besides the parameters, changes a point's numbers."""
        return {
            "clock_mhz": self.clock_mhz,
            "v": EVAL_VERSION,
            "batch": self.batch,
            "seed": self.seed,
            "quality_samples": self.quality_samples,
        }

    def point_id(self, params: dict[str, Any]) -> str:
        """Stable id of a point: the model, design kind, every parameter, the settings."""
        doc = [self.model, self.arch, sorted(params.items()), sorted(self.settings().items())]
        return hashlib.sha256(json.dumps(doc, default=str).encode()).hexdigest()[:12]


def _default_arch(model: str) -> str:
    """The zoo model's own target, else the first that runs its graph."""
    from accel import targets, zoo

    m = zoo.get(model)
    return m.arch or targets.for_graph(m.build()).name


def _values(name: str, spec: Any, kind: type) -> list:
    """A parameter's values from a scalar, a list, or {from, to, step|times}."""
    if isinstance(spec, dict):
        unknown = set(spec) - {"from", "to", "step", "times"}
        if unknown:
            raise AccelError(
                f"parameter {name}: unknown range key(s) {', '.join(sorted(map(str, unknown)))} "
                "(a range has from, to and step or times)"
            )
        if kind is not int:
            raise AccelError(f"parameter {name}: a range needs integers; give a list instead")
        if "from" not in spec or "to" not in spec:
            raise AccelError(f"parameter {name}: a range needs both 'from' and 'to'")
        lo, hi = _int(name, spec["from"]), _int(name, spec["to"])
        if "step" in spec and "times" in spec:
            raise AccelError(f"parameter {name}: give step or times, not both")
        if "times" in spec:
            times = _int(name, spec["times"])
            if times < 2 or lo < 1:
                raise AccelError(f"parameter {name}: a geometric range needs from >= 1, times >= 2")
            values = []
            v = lo
            while v <= hi:
                values.append(v)
                v *= times
        else:
            step = _int(name, spec.get("step", 1))
            if step < 1:
                raise AccelError(f"parameter {name}: step must be at least 1, got {step}")
            count = (hi - lo) // step + 1
            if count > MAX_POINTS:  # counted, not enumerated
                raise AccelError(
                    f"parameter {name}: the range has {count:,} values, more than {MAX_POINTS:,}"
                )
            values = list(range(lo, hi + 1, step))
        if not values:
            raise AccelError(f"parameter {name}: empty range (from {lo} to {hi})")
        return values
    values = spec if isinstance(spec, list) else [spec]
    if not values:
        raise AccelError(f"parameter {name}: empty list of values")
    out = [_int(name, v) if kind is int else _str(name, v) for v in values]
    if len(set(out)) != len(out):
        raise AccelError(f"parameter {name}: repeated values in {out}")
    return out


def _int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise AccelError(f"parameter {name}: expected an integer, got {v!r}")
    return v


def _str(name: str, v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise AccelError(f"parameter {name}: expected a string, got {v!r}")
    return str(v)


def _check(name: str, spec: Any) -> Check:
    if spec is None or spec is False:
        return Check()
    if spec is True:
        return Check(all=True)
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = {"points": spec}
    if not isinstance(spec, dict):
        raise AccelError(f"evaluate.{name}: expected true/false, a count or {{points, seed}}")
    unknown = set(spec) - {"points", "seed", "all"}
    if unknown:
        raise AccelError(f"evaluate.{name}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    points, seed = spec.get("points", 0), spec.get("seed", 0)
    for k, v in (("points", points), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise AccelError(f"evaluate.{name}.{k}: expected a count >= 0, got {v!r}")
    return Check(points=points, seed=seed, all=bool(spec.get("all", False)))


def _refuse_unknown(mapping: dict, known, where: str) -> None:
    unknown = set(mapping) - set(known)
    if unknown:
        raise AccelError(
            f"unknown key(s) {where}: {', '.join(sorted(map(str, unknown)))} "
            f"(known: {', '.join(known)})"
        )


def _name(text: Any) -> str:
    """A sweep name: it names the default output directory, so it is one plain file name."""
    if not isinstance(text, str | int) or isinstance(text, bool):
        raise AccelError(f"the sweep name must be a string, got {text!r}"[:200])
    text = str(text)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}", text):
        raise AccelError(
            f"sweep name {text[:100]!r}: use letters, digits and _ . + - (at most 100, no "
            "path separators, not starting with a dot)"
        )
    return text


def parse(doc: Any, name: str = "sweep") -> Sweep:
    """A sweep from a parsed YAML/JSON document."""
    from accel import zoo

    if not isinstance(doc, dict):
        raise AccelError("a sweep file must be a mapping with model, params and evaluate")
    _refuse_unknown(doc, TOP_KEYS, "in the sweep file")
    model = doc.get("model")
    if not isinstance(model, str):
        raise AccelError("the sweep file must name a model (model: autoencoder, nm_sparse, ...)")
    zoo.get(model)  # an unknown model fails here, listing the zoo
    from accel import targets

    arch = doc.get("arch") or _default_arch(model)
    if arch not in targets.TARGETS:
        raise AccelError(f"unknown arch {arch!r} (choose from {', '.join(targets.TARGETS)})")
    known = parameters(model, arch)
    params = doc.get("params") or {}
    if not isinstance(params, dict):
        raise AccelError("params must be a mapping of parameter names to values or ranges")
    bad = [p for p in params if p not in known]
    if bad:
        raise AccelError(
            f"unknown parameter {bad[0]!r} for a {arch} sweep (known: {', '.join(known)})"
        )
    axes, fixed = {}, {}
    for p, (kind, default) in known.items():
        if p not in params:
            fixed[p] = default
            continue
        values = _values(p, params[p], kind)
        if len(values) == 1:
            fixed[p] = values[0]
        else:
            axes[p] = values
    from accel.flows.boards import BOARDS

    for device in axes.get("device", [fixed.get("device")]):
        if device not in BOARDS:
            raise AccelError(
                f"parameter device: unknown board {device!r} (known: {', '.join(BOARDS)})"
            )
    ev = doc.get("evaluate") or {}
    if not isinstance(ev, dict):
        raise AccelError("evaluate must be a mapping")
    _refuse_unknown(ev, EVALUATE_KEYS, "under evaluate")
    sweep = Sweep(
        name=_name(doc.get("name", name)),
        model=model,
        arch=arch,
        axes=axes,
        fixed=fixed,
        checks={c: _check(c, ev.get(c)) for c in CHECKS},
    )
    for key in ("batch", "quality_samples"):
        if key in ev:
            v = ev[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise AccelError(f"evaluate.{key}: expected a positive integer, got {v!r}")
            setattr(sweep, key, v)
    if "seed" in ev:
        sweep.seed = _int("seed", ev["seed"])
        if not 0 <= sweep.seed < 2**32:
            raise AccelError(f"evaluate.seed: expected 0..2**32-1, got {sweep.seed}")
    if "clock_mhz" in ev:
        v = ev["clock_mhz"]
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise AccelError(f"evaluate.clock_mhz: expected a positive number, got {v!r}")
        sweep.clock_mhz = float(v)
    n = 1
    for values in axes.values():
        n *= len(values)
    if n > MAX_POINTS:
        raise AccelError(f"the sweep has {n} points, more than {MAX_POINTS}; narrow the ranges")
    return sweep


MAX_FILE_BYTES = 1 << 20


def _loader():
    """YAML's safe loader without aliases: a few bytes of ``*a`` can expand to gigabytes."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise AccelError(
                    f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not "
                    "allowed in a sweep file; write the values out"
                )
            return super().compose_node(parent, index)

    return Loader


def load(path: Path) -> Sweep:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise AccelError(f"sweep file {path} not found")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise AccelError(f"sweep file {path} has {size:,} bytes; at most {MAX_FILE_BYTES:,}")
    try:
        doc = yaml.load(path.read_text(), Loader=_loader())  # a SafeLoader without aliases
    except AccelError as e:
        raise AccelError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise AccelError(f"{path} is not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AccelError(f"cannot read {path}: {e}") from None
    return parse(doc, path.stem)
