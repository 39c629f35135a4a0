"""Save and load graphs as ``NAME.json`` (structure) + ``NAME.npz`` (integer params).

The JSON is meant to be read by people and diffed; every type, accumulator and
rounding mode is spelled out. Loading re-runs type inference and checks the
result equals what was saved, so a hand-edited file cannot drift silently.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from accel.errors import AccelError
from accel.fixed import FixedType, Quant
from accel.ir.graph import Graph, Param
from accel.nm import NM

FORMAT = "accel-graph/1"


def _attr_to_json(v: Any) -> Any:
    if isinstance(v, NM):
        return v.to_json()  # [n, m]; the op parses it back when the node is added
    if isinstance(v, Quant):
        return {"quant": v.to_json()}
    if isinstance(v, FixedType):
        return {"fixed": v.to_json()}
    return v


def _attr_from_json(v: Any) -> Any:
    if isinstance(v, dict) and set(v) == {"quant"}:
        return Quant.from_json(v["quant"])
    if isinstance(v, dict) and set(v) == {"fixed"}:
        return FixedType.from_json(v["fixed"])
    return v


def to_json(graph: Graph) -> dict:
    return {
        "format": FORMAT,
        "name": graph.name,
        "meta": graph.meta,
        "inputs": [
            {
                "name": t,
                "shape": list(graph.tensors[t].shape),
                "quant": graph.input_quant[t].to_json(),
            }
            for t in graph.inputs
        ],
        "nodes": [
            {
                "name": n.name,
                "op": n.op,
                "inputs": n.inputs,
                "output": {
                    "shape": list(graph.tensors[n.outputs[0]].shape),
                    "type": graph.tensors[n.outputs[0]].type.to_json(),
                },
                "attrs": {k: _attr_to_json(v) for k, v in n.attrs.items()},
                "params": {k: p.type.to_json() for k, p in n.params.items()},
            }
            for n in graph.nodes
        ],
        "outputs": graph.outputs,
    }


def save(graph: Graph, path: str | Path) -> tuple[Path, Path]:
    """Write ``path.json`` and ``path.npz`` (``path`` without suffix)."""
    base = Path(path).with_suffix("")
    jpath, npath = base.with_suffix(".json"), base.with_suffix(".npz")
    jpath.write_text(json.dumps(to_json(graph), indent=1) + "\n")
    arrays = {f"{n.name}/{k}": p.data for n in graph.nodes for k, p in n.params.items()}
    np.savez_compressed(npath, **arrays)
    return jpath, npath


def load(path: str | Path) -> Graph:
    base = Path(path).with_suffix("")
    jpath, npath = base.with_suffix(".json"), base.with_suffix(".npz")
    for p in (jpath, npath):
        if not p.is_file():
            raise AccelError(f"graph file {p} not found")
    try:
        doc = json.loads(jpath.read_text())
        arrays = dict(np.load(npath))
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise AccelError(f"cannot read graph {base}: {e}") from None
    if doc.get("format") != FORMAT:
        raise AccelError(f"{jpath} is not an accel graph ({FORMAT})")
    try:
        return _from_doc(doc, arrays)
    except (KeyError, TypeError) as e:
        raise AccelError(f"malformed graph file {jpath}: missing or bad field {e}") from None


def _from_doc(doc: dict, arrays: dict[str, np.ndarray]) -> Graph:
    g = Graph(doc["name"])
    g.meta = doc.get("meta", {})
    for t in doc["inputs"]:
        g.add_input(t["name"], tuple(t["shape"]), Quant.from_json(t["quant"]))
    for n in doc["nodes"]:
        params = {
            k: Param(arrays[f"{n['name']}/{k}"], FixedType.from_json(t))
            for k, t in n["params"].items()
        }
        attrs = {k: _attr_from_json(v) for k, v in n["attrs"].items()}
        out = g.add(n["op"], n["inputs"], name=n["name"], params=params, **attrs)
        saved = (tuple(n["output"]["shape"]), FixedType.from_json(n["output"]["type"]))
        got = (g.tensors[out].shape, g.tensors[out].type)
        if saved != got:
            raise AccelError(f"node {n['name']}: saved output {saved} but inference gives {got}")
    g.mark_output(*doc["outputs"])
    return g
