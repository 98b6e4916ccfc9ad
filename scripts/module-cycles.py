#!/usr/bin/env python3
"""Prints the imports between top-level modules of src/ and any cycle among them.

An edge X -> Y is any `crate::Y` path in the code of module X (src/X.rs or src/X/),
comments left out, and test code too (a trailing `#[cfg(test)] mod tests`, a tests.rs)
unless --with-tests. Exits 1 when there is a cycle.
Usage: scripts/module-cycles.py [--edges] [--with-tests]
"""
import pathlib
import re
import sys

src = pathlib.Path(__file__).resolve().parent.parent / "src"
mods = {p.stem if p.is_file() else p.name: p for p in src.iterdir()
        if (p.suffix == ".rs" and p.stem not in ("lib", "main")) or p.is_dir()}
path_re = re.compile(r"\bcrate::(?:\{([^}]*)\}|(\w+))")
edges = {m: set() for m in mods}
for m, p in mods.items():
    files = [p] if p.is_file() else sorted(p.rglob("*.rs"))
    for f in files:
        text = f.read_text()
        if "--with-tests" not in sys.argv:
            if f.name == "tests.rs":
                continue
            text = re.split(r"(?m)^#\[cfg\(test\)\]\nmod tests \{", text)[0]
        code = "\n".join(re.sub(r"//.*", "", l) for l in text.splitlines())
        for group, name in path_re.findall(code):
            names = [name] if name else [g.strip().split("::")[0] for g in group.split(",")]
            edges[m].update(n for n in names if n in mods and n != m)

# Strongly connected components (Tarjan).
index, low, stack, on, sccs = {}, {}, [], set(), []
def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v); on.add(v)
    for w in sorted(edges[v]):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        c = []
        while True:
            w = stack.pop(); on.discard(w); c.append(w)
            if w == v:
                break
        if len(c) > 1:
            sccs.append(sorted(c))
sys.setrecursionlimit(10000)
for v in sorted(mods):
    if v not in index:
        visit(v)

if "--edges" in sys.argv:
    for m in sorted(edges):
        print(f"{m} -> {', '.join(sorted(edges[m])) or '(none)'}")
for c in sccs:
    inner = [f"{a} -> {b}" for a in c for b in sorted(edges[a]) if b in c]
    print(f"cycle among {', '.join(c)}: {'; '.join(inner)}")
if not sccs:
    print("no cycle between top-level modules")
sys.exit(1 if sccs else 0)
