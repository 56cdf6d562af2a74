"""How a program's run is judged: stdout against the expected output, and the HumanEval-style harness."""
from __future__ import annotations


def _stdio_match(got: str, expected: str) -> bool:
    """LCB-like: trailing whitespace per line and trailing blank lines ignored; same line count and tokens."""
    def lines(s):
        ls = [ln.rstrip() for ln in s.replace("\r\n", "\n").split("\n")]
        while ls and not ls[-1]:
            ls.pop()
        return ls
    a, b = lines(got), lines(expected)
    return len(a) == len(b) and all(x.split() == y.split() for x, y in zip(a, b))


# The function-level harness. The nonce arrives on stdin and is printed only after check() returned, so
# sys.exit(0)/os._exit(0) before the asserts, or printing "PASSED", cannot fake success. Results must be
# plain built-in values, so an object whose __eq__ is always True fails. The test file is deleted before
# the solution runs, so the solution cannot read the expected answers from disk.
_HARNESS = r'''
import os, sys
def _main():
    nonce = sys.stdin.readline().strip()
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    sys.stdin.close()
    out = os.dup(1)
    with open("solution.py", encoding="utf-8") as f:
        src = f.read()
    with open("test_code.py", encoding="utf-8") as f:
        test = f.read()
    os.remove("test_code.py")
    def plain(x, depth=0):   # exact built-in types only: a subclass could override __eq__
        t = type(x)
        if t in (int, float, complex, str, bytes, bool, type(None)):
            return True
        if depth > 50 or t not in (list, tuple, set, frozenset, dict):
            return False
        return all(plain(v, depth + 1) for v in ([*x.keys(), *x.values()] if t is dict else x))
    g = {"__name__": "solution", "__builtins__": __builtins__}
    exec(compile(src, "solution.py", "exec"), g)
    fn = g.get(sys.argv[1])
    if not callable(fn):
        raise SystemExit("entry point not defined")
    def candidate(*args, **kwargs):
        result = fn(*args, **kwargs)
        if not plain(result):
            raise TypeError("result is not a plain built-in value")
        return result
    exec(compile(test, "test_code.py", "exec"), g)
    g["check"](candidate)
    for stream in (sys.stdout, sys.__stdout__):   # the solution's own prints go before the nonce
        try:
            stream.flush()
        except Exception:
            pass
    os.write(out, ("\n" + nonce + "\n").encode())
_main()
'''
