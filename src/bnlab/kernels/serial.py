"""Serial twins of the compiled CPU kernels: the same code, compiled without parallel loops.

A Numba parallel loop opens an OpenMP region on every call, even on one thread. Inside a
network, torch's convolutions before and after each batch norm run teams of
``torch.get_num_threads()`` threads on the same OpenMP runtime; a one-thread region between
them makes the runtime reshape its team twice per call. Measured with
``bnlab.bench.layer_cost``'s method (mobilenet_v3_small, eval, 112 px, 2 threads), the eval
entries cost 36.4 -> 28.9 us per layer at batch 8 and 60.7 -> 51.0 at batch 32 when they kept
torch's team instead of switching to one thread for small calls. A call too small to share out
(``cpu.SERIAL_NUMEL``) therefore runs a twin, which opens no region at all, and every other
call runs on torch's thread count.

A twin is its original's Python function compiled with ``parallel=False`` (``prange`` then
runs as ``range``: the same tasks in the same order), under its own name (``<name>__serial``,
its own disk cache entry), with the globals it calls swapped for their twins. Only what reaches
a parallel loop is twinned; the rest is shared. LLVM may vectorize a twin differently from its
original, so sums can differ in the last bits (tested to 1e-12 in float64); which build runs
depends on the shape only, never on the thread count, so results stay reproducible.
"""

from __future__ import annotations

import types
from typing import Any

from numba import njit
from numba.core.dispatcher import Dispatcher

from bnlab.kernels import cpu_entries, cpu_numba

__all__ = ["entries", "loops"]

_SUFFIX = "__serial"


def _dispatchers(module: types.ModuleType) -> dict[str, Dispatcher]:
    """The Numba functions ``module`` defines (not those it imports)."""
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, Dispatcher) and value.py_func.__module__ == module.__name__
    }


def _twin(dispatcher: Dispatcher, namespace: dict[str, Any]) -> Dispatcher:
    """``dispatcher``'s function compiled serially, its globals looked up in ``namespace``."""
    f = dispatcher.py_func
    g = types.FunctionType(f.__code__, namespace, f.__name__, f.__defaults__, f.__closure__)
    g.__qualname__ = f.__qualname__ + _SUFFIX
    g.__module__ = f.__module__
    options = {k: v for k, v in dispatcher.targetoptions.items() if k != "nopython"}
    # cached on disk like every kernel here (``cache`` is not among the target options)
    return njit(**{**options, "parallel": False, "cache": True})(g)


def twin_module(module: types.ModuleType, swaps: dict[str, Any]) -> types.ModuleType:
    """A module object with ``module``'s names, where every Numba function that reaches a
    parallel loop (has one, or calls such a function, or names a global of ``swaps``) is
    replaced by its serial twin."""
    defined = _dispatchers(module)
    twinned = {n for n, d in defined.items() if d.targetoptions.get("parallel")}
    while True:  # whatever calls a twinned function, directly, is twinned too
        more = {
            n
            for n, d in defined.items()
            if n not in twinned and not twinned.union(swaps).isdisjoint(d.py_func.__code__.co_names)
        }
        if not more:
            break
        twinned |= more
    namespace = {**vars(module), **swaps}
    for name in twinned:
        namespace[name] = _twin(defined[name], namespace)
    twin = types.ModuleType(module.__name__ + _SUFFIX, module.__doc__)
    vars(twin).update((k, v) for k, v in namespace.items() if not k.startswith("__"))
    return twin


#: ``cpu_numba``'s loops, serial
loops = twin_module(cpu_numba, {})
#: ``cpu_entries``'s entries, calling the serial loops
entries = twin_module(cpu_entries, {"loops": loops})
