#!/usr/bin/env python3
"""Converts branches of a ROOT TTree into the HDF5 table hrtrain reads (uproot, awkward, h5py from PyPI).

    python3 scripts/root-to-hdf5.py INPUT.root OUTPUT.h5 --tree TREE \\
        --scalar met_x,met_y,mu,n_pv,truth_x,truth_y \\
        --leading jet_px,jet_py:2:jet{i}_px,jet{i}_py

--scalar B1,B2,...   scalar branches, one column each, named as the branch (rename with B:NAME).
--leading B1,B2,...:K[:F1,F2,...]
                     the first K elements of jagged (or fixed-size array) branches, zero-padded where an event
                     has fewer (like the thesis' "leading jets/PFOs" features); per object i = 1..K one column per
                     branch (jet1_px, jet1_py, jet2_px, ...), named Fb.format(i=i) (default "B_{i}"). Elements
                     are taken in stored order: ROOT ntuples usually store objects sorted by pT; sort them
                     before converting if yours does not.
--cut EXPR           keep only the entries where the uproot/numexpr expression EXPR is true (e.g. "mu > 10").

Column order: the --scalar columns, then the --leading ones, in the order given. The output is one 2-D
little-endian float32 dataset "data" [entries, columns] with the column names in its attribute "columns"
(variable-length UTF-8 strings), which `hrtrain train --data OUTPUT.h5` reads; integers and doubles are
converted to float32. The file is read in chunks (--step-size, default 100 MB of branch data), so large trees
fit in memory, and written to OUTPUT.h5.tmp first, then renamed: a failed run leaves no partial file.
"""
import argparse
import os
import sys

import awkward as ak
import h5py
import numpy as np
import uproot


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--tree", required=True, help="the TTree's name (or path inside the file)")
    p.add_argument("--scalar", action="append", default=[], help="scalar branches, comma separated (B or B:NAME)")
    p.add_argument("--leading", action="append", default=[], help="B1,B2,...:K[:F1,F2,...], repeatable")
    p.add_argument("--cut", help="a selection expression over the tree's branches")
    p.add_argument("--step-size", default="100 MB", help="uproot's chunk size (entries or bytes, e.g. '100 MB')")
    return p.parse_args()


def plan(args):
    """The (branches, kind, K, column names) to write: kind 'scalar' or 'leading'."""
    items = []
    for group in args.scalar:
        for spec in filter(None, group.split(",")):
            branch, _, name = spec.partition(":")
            items.append(([branch], "scalar", 1, [name or branch]))
    for spec in args.leading:
        parts = spec.split(":", 2)
        branches = parts[0].split(",")
        if len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) < 1 or "" in branches:
            sys.exit(f"--leading {spec}: expected B1,B2,...:K[:F1,F2,...] with K >= 1")
        formats = parts[2].split(",") if len(parts) == 3 else [b + "_{i}" for b in branches]
        if len(formats) != len(branches):
            sys.exit(f"--leading {spec}: {len(branches)} branches but {len(formats)} column formats")
        k = int(parts[1])
        items.append((branches, "leading", k, [f.format(i=i) for i in range(1, k + 1) for f in formats]))
    names = [n for item in items for n in item[3]]
    if not names:
        sys.exit("name at least one --scalar or --leading branch")
    if len(set(names)) != len(names):
        sys.exit(f"column names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}")
    return items, names


def columns_of(chunk, items):
    """The float32 [entries, columns] block of one chunk."""
    blocks = []
    for branches, kind, k, _ in items:
        per_branch = []
        for branch in branches:
            values = chunk[branch]
            depth = values.ndim
            if kind == "scalar":
                if depth != 1:
                    sys.exit(f"branch {branch} holds arrays, not scalars: use --leading {branch}:K")
                per_branch.append(ak.to_numpy(values).astype(np.float32).reshape(-1, 1))
            else:
                if depth != 2:
                    sys.exit(f"branch {branch} is {'a scalar' if depth == 1 else 'nested deeper'}: --leading "
                             "needs one array per entry")
                padded = ak.fill_none(ak.pad_none(values, k, axis=1, clip=True), 0)
                per_branch.append(ak.to_numpy(padded).astype(np.float32).reshape(-1, k))
        # Object-major: element 1 of every branch, then element 2, ...
        blocks.append(np.stack(per_branch, axis=2).reshape(len(per_branch[0]), -1))
    return np.concatenate(blocks, axis=1)


def main():
    args = parse_args()
    items, names = plan(args)
    try:
        tree = uproot.open(args.input)[args.tree]
    except (OSError, KeyError, ValueError) as error:
        sys.exit(f"{args.input}: cannot open the tree {args.tree!r}: {error}")
    missing = [b for bs, *_ in items for b in bs if b not in tree.keys()]
    if missing:
        sys.exit(f"{args.input}:{args.tree} has no branch {', '.join(missing)}; it has: {', '.join(tree.keys())}")
    temporary = args.output + ".tmp"
    try:
        with h5py.File(temporary, "w") as out:
            data = out.create_dataset("data", shape=(0, len(names)), maxshape=(None, len(names)), dtype="<f4",
                                      chunks=(max(1, 65536 // len(names)), len(names)))
            data.attrs["columns"] = np.array(names, dtype=h5py.string_dtype("utf-8"))
            branches = sorted({b for bs, *_ in items for b in bs})
            for chunk in tree.iterate(branches, cut=args.cut, step_size=args.step_size, library="ak"):
                block = columns_of(chunk, items)
                start = data.shape[0]
                data.resize(start + len(block), axis=0)
                data[start:] = block
            rows = data.shape[0]
        os.replace(temporary, args.output)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    print(f"{args.input}:{args.tree} -> {args.output}: {rows} entries x {len(names)} columns ({', '.join(names)})")


if __name__ == "__main__":
    main()
