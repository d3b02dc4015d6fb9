#!/usr/bin/env python3
"""Checks that no crate of the workspace has a cycle among its modules.

Usage: python3 scripts/module-layers.py [--graph] [crates/NAME ...]

Every `crate::`, `super::` and `self::` path (in `use` trees too) and every path
through a child module is an edge from the module whose file holds it to the module
it names. At each level of the module tree, the children of one module (and that
module's own file) must form no cycle: a module uses its own children, and a child
never uses its parent or an ancestor's items. Test modules (`#[cfg(test)]`) and
comments are left out. Prints the order of each level from the bottom up with
`--graph`; exits 1 and names the cycle when there is one.
"""

import os
import re
import sys
from pathlib import Path

SELF = "(self)"


def strip(text):
    """The text without comments, string literals, and test modules."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'(?<![\w])r(#*)".*?"\1', '""', text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    cut = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
    if cut:
        text = text[: cut.start()]
    return text


def modules(src):
    """Module path (tuple) -> stripped text, for every file module under `src`."""
    out = {}
    for path in src.rglob("*.rs"):
        rel = path.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts == ["lib"] or parts == ["main"]:
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        if "bin" in parts[:1]:
            continue
        out[tuple(parts)] = strip(path.read_text())
    return out


def expand(tree):
    """The paths a `use` tree names: `a::{b, c::d}` -> a::b, a::c::d."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    paths = []

    def walk(prefix, s, i):
        # Parses one list of items starting at s[i] until '}' or end; returns index.
        while i < len(s):
            m = re.match(r"[\w:]*", s[i:])
            seg = m.group(0)
            i += len(seg)
            seg = seg.rstrip(":")
            full = prefix + ([x for x in seg.split("::") if x] if seg else [])
            if i < len(s) and s[i] == "{":
                i = walk(full, s, i + 1)
            else:
                m = re.match(r"as\w+|\*", s[i:])
                if m:
                    i += len(m.group(0))
                paths.append(full)
            if i < len(s) and s[i] == ",":
                i += 1
                continue
            if i < len(s) and s[i] == "}":
                return i + 1
            if i < len(s):
                i += 1  # anything else (an attribute, a keyword) is skipped
        return i

    walk([], tree, 0)
    return paths


def target(mods, here, path, imports=None):
    """The module a path from module `here` names: its longest module prefix, or,
    for an item a module only re-exports, the module it comes from."""
    if not path:
        return None
    if path[0] == "crate":
        base, rest = (), path[1:]
    elif path[0] == "super":
        base, rest = here, path
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    elif path[0] == "self":
        base, rest = here, path[1:]
    elif here + (path[0],) in mods:
        base, rest = here, path
    else:
        return None
    best, n = base, 0
    while n < len(rest) and base + tuple(rest[: n + 1]) in mods:
        n += 1
        best = base + tuple(rest[:n])
    if imports is not None and n < len(rest):
        item = rest[n]
        defined = re.search(
            r"\b(fn|struct|enum|type|trait|const|static|macro_rules!)\s+" + re.escape(item) + r"\b",
            mods[best],
        )
        source = imports.get(best, {}).get(item)
        if not defined and source is not None and source != best:
            return source
    return best


def reexports(mods):
    """Module -> {name: module it is imported from}, from each module's `use` items."""
    out = {}
    for here, text in mods.items():
        names = {}
        for tree in re.findall(r"\buse\s+([^;]+);", text):
            for p in expand(tree):
                if len(p) < 2:
                    continue
                t = target(mods, here, p[:-1])
                if t is not None and t != here:
                    names[p[-1]] = t
        out[here] = names
    return out


def edges(mods):
    out = {m: set() for m in mods}
    imports = reexports(mods)
    for here, text in mods.items():
        found = []
        for tree in re.findall(r"\buse\s+([^;]+);", text):
            found.extend(expand(tree))
        # Paths written out in the code; a use tree is read whole above, and its
        # prefix (`crate::a` of `crate::a::{b, c}`) names no use of `a` itself.
        body = re.sub(r"\buse\s+[^;]+;", "", text)
        for p in re.findall(r"(?<![\w:])((?:crate|super|self|\w+)(?:::\w+)+)", body):
            found.append(p.split("::"))
        for p in found:
            t = target(mods, here, p, imports)
            if t is not None and t != here:
                out[here].add(t)
    return out


def cycles(nodes, graph):
    """The strongly connected parts of `graph` with more than one node (each a sorted
    list), and, when there are none, the nodes from the bottom up."""
    index, low, on, stack, parts, order = {}, {}, set(), [], [], []

    def visit(n):
        index[n] = low[n] = len(index)
        stack.append(n)
        on.add(n)
        for m in sorted(graph.get(n, ())):
            if m not in index:
                visit(m)
                low[n] = min(low[n], low[m])
            elif m in on:
                low[n] = min(low[n], index[m])
        if low[n] == index[n]:
            part = []
            while True:
                m = stack.pop()
                on.discard(m)
                part.append(m)
                if m == n:
                    break
            order.extend(sorted(part))
            if len(part) > 1:
                parts.append(sorted(part))

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return parts, order


def check(crate, show):
    src = crate / "src"
    if not src.is_dir():
        return True
    mods = modules(src)
    graph = edges(mods)
    ok = True
    for parent in sorted(m for m in mods if any(len(c) == len(m) + 1 and c[: len(m)] == m for c in mods)):
        level = {}
        for m, targets in graph.items():
            if m[: len(parent)] != parent:
                continue
            a = m[len(parent)] if len(m) > len(parent) else SELF
            for t in targets:
                if t[: len(parent)] != parent:
                    continue
                b = t[len(parent)] if len(t) > len(parent) else SELF
                if a != b:
                    level.setdefault(a, set()).add(b)
        nodes = {c[len(parent)] for c in mods if len(c) > len(parent) and c[: len(parent)] == parent}
        nodes.add(SELF)
        parts, order = cycles(nodes, level)
        name = crate.name + ("::" + "::".join(parent) if parent else "")
        for part in parts:
            ok = False
            uses = "; ".join(
                f"{a} uses {', '.join(sorted(b for b in level.get(a, ()) if b in part))}" for a in part
            )
            print(f"{name}: module cycle among {', '.join(part)} ({uses})")
        if not parts and show:
            print(f"{name}: {' < '.join(n for n in order)}")
    return ok


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    show = "--graph" in sys.argv
    root = Path(__file__).resolve().parent.parent
    crates = [Path(a) for a in args] or sorted((root / "crates").iterdir()) + sorted((root / "examples").iterdir())
    ok = all([check(c, show) for c in crates if c.is_dir()])
    if ok:
        print(f"no module cycles in {len(crates)} crates")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
