"""Run a module (`python benchmarks/fault_shim.py evo.run ARGS...`) with one journal write failing.

The environment says which: DIMORPH_FAULT_WRITE=N (the N-th write to a journal, journal.jsonl or
build.jsonl, of this process), DIMORPH_FAULT_KIND=ENOSPC|EACCES, DIMORPH_FAULT_CUT=f (the fraction of
that line written before the error, so the journal ends in a torn line). Used by
benchmarks/fault_injection.py; nothing in the project imports it.
"""
import builtins
import errno
import os
import runpy
import sys

_open = builtins.open
_count = 0


class _Faulty:
    def __init__(self, fh):
        self._fh = fh

    def write(self, text):
        global _count
        _count += 1
        if _count == int(os.environ["DIMORPH_FAULT_WRITE"]):
            self._fh.write(text[: int(len(text) * float(os.environ.get("DIMORPH_FAULT_CUT", "0.5")))])
            self._fh.flush()
            code = errno.ENOSPC if os.environ.get("DIMORPH_FAULT_KIND", "ENOSPC") == "ENOSPC" else errno.EACCES
            raise OSError(code, os.strerror(code))
        return self._fh.write(text)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


def _faulty_open(file, mode="r", *args, **kwargs):
    fh = _open(file, mode, *args, **kwargs)
    if "a" in mode and str(file).endswith(("journal.jsonl", "build.jsonl")):
        return _Faulty(fh)
    return fh


if __name__ == "__main__":
    builtins.open = _faulty_open
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
