"""A byte-stable ONNX graph: nodes in a topological order that breaks ties by name, initializers by name.

The exporter needs it for reproducible bytes (the calibration cache is keyed by the model's checksum); bit-bench's
roofline needs the dependency order for ONNX shape inference. onnx is imported only when called.
"""

from __future__ import annotations

import heapq
from collections import defaultdict

from .errors import BitError


def set_nodes(graph, nodes) -> None:
    """Replace the graph's node list with copies of `nodes` (the originals may be elements of that list)."""
    from onnx import NodeProto

    copies = []
    for n in nodes:
        c = NodeProto()
        c.CopyFrom(n)
        copies.append(c)
    del graph.node[:]
    graph.node.extend(copies)


def canonicalize(model, initializers: bool = True) -> None:
    """Sort the graph in place: a topological order breaking ties by node name, and (initializers=True) initializers
    by name.

    tf2onnx's node order follows Python set iteration, which changes with hash randomization between runs;
    the calibration cache is keyed by the model's checksum, so the same export must give the same bytes.
    Sorting initializers moves every tensor, so it is done before the weights are bound (tf2onnx's own
    constants are small); every later pass appends in node order, which is then already canonical.
    """
    graph = model.graph
    producers = {o: i for i, n in enumerate(graph.node) for o in n.output}
    deps = [{producers[x] for x in n.input if x in producers} for n in graph.node]
    users = defaultdict(list)
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    waiting = [len(d) for d in deps]
    ready = [(graph.node[i].name, i) for i, d in enumerate(deps) if not d]
    heapq.heapify(ready)
    order = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for j in users[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, (graph.node[j].name, j))
    if len(order) != len(graph.node):
        raise BitError("internal: graph has a cycle")
    set_nodes(graph, [graph.node[i] for i in order])
    if not initializers:
        return
    inits = sorted(range(len(graph.initializer)), key=lambda i: graph.initializer[i].name)
    if inits != list(range(len(inits))):
        from onnx import TensorProto

        ordered = []
        for i in inits:  # move, not copy: swap each tensor out of the old list
            t = TensorProto()
            t.CopyFrom(graph.initializer[i])
            graph.initializer[i].Clear()
            ordered.append(t)
        del graph.initializer[:]
        for t in ordered:
            graph.initializer.add().CopyFrom(t)
            t.Clear()
