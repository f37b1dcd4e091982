#!/usr/bin/env python3
"""Wraps protoc-gen-swift's long lines at 120 characters, keeping the code's meaning exactly.

Doc comments are wrapped at word boundaries; `_NameMap(bytecode: "…")` literals become multi-line string
literals with `\\` line continuations (the same StaticString, split only before a `\\0`); declarations with
long conformance lists break after the colon, long
assignments after the `=`. Any other long line is an error, so a new plugin version that
writes one is noticed. Usage: wrap-generated-swift.py FILE (rewritten in place).
"""
import re
import sys

LIMIT = 120


def wrap_comment(line):
    indent = line[: len(line) - len(line.lstrip())]
    prefix = indent + "/// "
    words = line.strip()[3:].strip().split(" ")
    out, current = [], prefix
    for word in words:
        if current != prefix and len(current) + 1 + len(word) > LIMIT:
            out.append(current)
            current = prefix + word
        else:
            current = current + ("" if current == prefix else " ") + word
    out.append(current)
    return out


def wrap_bytecode(line):
    match = re.match(r'^(\s*)(.*_NameMap\(bytecode: )"(.*)"\)$', line)
    if not match:
        return None
    indent, head, body = match.groups()
    inner = indent + "    "
    pieces = re.split(r"(?=\\0)", body)
    chunks, current = [], ""
    for piece in pieces:
        if current and len(inner) + len(current) + len(piece) + 1 > LIMIT:
            chunks.append(current)
            current = piece
        else:
            current += piece
    chunks.append(current)
    if any(len(inner) + len(c) + 1 > LIMIT or c.endswith("\\") for c in chunks):
        return None
    lines = [indent + head + '"""']
    lines += [inner + c + "\\" for c in chunks[:-1]] + [inner + chunks[-1], inner + '""")']
    return lines


def wrap_declaration(line):
    match = re.match(r"^(\s*)(.*(?:extension|struct|enum|class) [\w.]+): (.*) \{$", line)
    if not match:
        return None
    indent, head, conformances = match.groups()
    if len(indent) + 4 + len(conformances) > LIMIT:
        return None
    return [indent + head + ":", indent + "    " + conformances, indent + "{"]


def wrap_assignment(line):
    match = re.match(r"^(\s*)((?:let|var) [^=]*) = (.*)$", line)
    if not match:
        return None
    indent, head, value = match.groups()
    if len(indent) + 4 + len(value) > LIMIT:
        return None
    return [indent + head + " =", indent + "    " + value]


def main(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    out = []
    for number, line in enumerate(lines, 1):
        if len(line) <= LIMIT:
            out.append(line)
            continue
        if line.lstrip().startswith("///"):
            wrapped = wrap_comment(line)
        else:
            wrapped = wrap_bytecode(line) or wrap_declaration(line) or wrap_assignment(line)
        if wrapped is None:
            sys.exit(f"{path}:{number}: cannot wrap this {len(line)}-character line: {line.strip()[:80]}")
        out.extend(wrapped)
    open(path, "w", encoding="utf-8").write("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
