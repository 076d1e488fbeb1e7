# Run by framevars_test.go: gdb -batch -ex 'python PCS=[0x...]' -x scope.py BINARY
# For each PC of PCS, prints "PC\t<hex>", then for every block from the
# innermost one at PC out to its (non-inlined) function, one line per symbol: the names of the inlined functions
# the block is nested in ("a/b/", "" for the function itself), a tab, and
# gdb's own "info scope" text for the symbol with newlines turned into
# " | ". "info scope *A" lists the symbols of the innermost block at A and
# of its superblocks up to the first function block, inlined ones
# included; so it is asked once per block, at an address inside it, and
# only that block's own symbols are kept. A block gdb cannot be asked
# about has its symbols printed as "UNCHECKED\t<path>".
import gdb, re

def key(b):
    # gdb.Block objects compare by identity of the Python wrapper, not of
    # the block; nested blocks often share start and end.
    return (b.start, b.end, b.function.name if b.function else None,
            tuple((s.name, s.line) for s in b))

def find(blk):
    # An address whose innermost block has blk as itself or as an
    # ancestor, and how many symbols "info scope" lists there before
    # blk's own.
    k = key(blk)
    for a in range(blk.start, blk.end):
        x, skip = gdb.block_for_pc(a), 0
        while x is not None and not x.is_static:
            if key(x) == k:
                return a, skip
            if x.function is not None:
                break  # info scope stops here
            skip += len(list(x))
            x = x.superblock
    return None, 0

def scope(PC):
    b = gdb.block_for_pc(PC)
    chain = []
    while b is not None and not b.is_static and not b.is_global:
        chain.append(b)
        if b.function is not None and b.superblock is not None and b.superblock.is_static:
            break
        b = b.superblock

    prefix = []
    for i, blk in enumerate(chain):
        names = [x.function.name for x in chain[i:-1] if x.function is not None]
        prefix.append("".join(n + "/" for n in reversed(names)))

    for i, blk in enumerate(chain):
        syms = list(blk)
        if not syms:
            continue
        at, skip = find(blk)
        if at is None:
            # Every address of blk is inside an inlined function nested
            # in it, where "info scope" stops: gdb cannot be asked.
            for s in syms:
                print("UNCHECKED\t%s%s" % (prefix[i], s.name))
            continue
        out = gdb.execute("info scope *0x%x" % at, to_string=True)
        entries = re.split(r"(?m)^Symbol ", out)[1:]
        for s, e in zip(syms, entries[skip:skip + len(syms)]):
            name = e.split(" ", 1)[0]
            if name != s.name:
                print("MISMATCH\t%s\t%s" % (s.name, name))
                continue
            print("%s\t%s" % (prefix[i], e.strip().replace("\n", " | ")))

for pc in PCS:
    print("PC\t%x" % pc)
    scope(pc)
