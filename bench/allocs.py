"""Count CPython allocator calls, to check "no allocation per frame" exactly.

``tracemalloc`` only sees memory that is still alive when it looks, so an
object allocated and freed within one frame (a ``memoryview``, an ``int``)
is invisible to it.  This module compiles, once per run, a tiny C hook that
wraps the ``PYMEM_DOMAIN_MEM`` and ``PYMEM_DOMAIN_OBJ`` allocators (the
documented ``PyMem_SetAllocator`` hook mechanism that tracemalloc itself
uses) and counts every ``malloc``/``calloc``/``realloc`` call and the bytes
asked for.  Both domains are only called with the GIL held, so plain
counters are exact.

:func:`load` returns ``None`` when no C compiler or no ``Python.h`` is
available; the benchmark then reports tracemalloc's numbers only.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

_SOURCE = r"""
#include <Python.h>

static PyMemAllocatorEx orig_mem, orig_obj;
static unsigned long long n_calls, n_bytes;

#define HOOKS(NAME, ORIG)                                                       \
static void *NAME##_malloc(void *ctx, size_t n)                                 \
    { n_calls++; n_bytes += n; return ORIG.malloc(ORIG.ctx, n); }               \
static void *NAME##_calloc(void *ctx, size_t e, size_t n)                       \
    { n_calls++; n_bytes += e * n; return ORIG.calloc(ORIG.ctx, e, n); }        \
static void *NAME##_realloc(void *ctx, void *p, size_t n)                       \
    { n_calls++; n_bytes += n; return ORIG.realloc(ORIG.ctx, p, n); }           \
static void NAME##_free(void *ctx, void *p) { ORIG.free(ORIG.ctx, p); }

HOOKS(mem, orig_mem)
HOOKS(obj, orig_obj)

void counter_install(void) {
    PyMemAllocatorEx mem = {NULL, mem_malloc, mem_calloc, mem_realloc, mem_free};
    PyMemAllocatorEx obj = {NULL, obj_malloc, obj_calloc, obj_realloc, obj_free};
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &orig_mem);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &orig_obj);
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &mem);
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &obj);
}

void counter_uninstall(void) {
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &orig_mem);
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &orig_obj);
}

unsigned long long counter_calls(void) { return n_calls; }
unsigned long long counter_bytes(void) { return n_bytes; }
"""


class AllocationCounter:
    """``with counter: ...`` counts allocator calls; read :meth:`read` inside or after."""

    def __init__(self, lib: ctypes.PyDLL) -> None:
        self._lib = lib
        lib.counter_calls.restype = ctypes.c_ulonglong
        lib.counter_bytes.restype = ctypes.c_ulonglong

    def __enter__(self) -> AllocationCounter:
        self._lib.counter_install()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lib.counter_uninstall()

    def read(self) -> tuple[int, int]:
        """``(calls, bytes)`` so far (each read itself allocates a few ints)."""
        return int(self._lib.counter_calls()), int(self._lib.counter_bytes())


def load() -> AllocationCounter | None:
    compiler = sysconfig.get_config_var("CC") or "cc"
    include = sysconfig.get_paths()["include"]
    if shutil.which(compiler.split()[0]) is None or not Path(include, "Python.h").exists():
        return None
    folder = Path(tempfile.mkdtemp(prefix="trio_feed-bench-"))
    source = folder / "counter.c"
    source.write_text(_SOURCE)
    target = folder / "counter.so"
    try:
        subprocess.run(
            [
                *compiler.split(),
                "-O2",
                "-shared",
                "-fPIC",
                f"-I{include}",
                str(source),
                "-o",
                str(target),
            ],
            check=True,
            capture_output=True,
        )
        return AllocationCounter(ctypes.PyDLL(str(target)))
    except (OSError, subprocess.CalledProcessError):
        return None
