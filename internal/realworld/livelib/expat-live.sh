#!/usr/bin/env bash
# A real library fix patched live: Debian bookworm's expat 2.5.0-1+deb12u2,
# whose debian/patches series ends with two security fixes. OLD is the
# library with the series applied up to CVE-2023-52425; NEW adds the next
# patch, expat-2.5.0-CVE-2024-50602.patch (XML_StopParser on a parser that
# never started returned OK and left XML_ResumeParser to crash; the fix
# refuses it with XML_ERROR_NOT_STARTED). Both are built -O2 -g -fPIC as
# shared libraries with the SONAME libexpat.so.1.
#
# A small server (xmlprobe.c) links the library, keeps a counter of the
# documents it parsed, and answers STOP (XML_StopParser on a fresh parser)
# and PARSE <xml>. The script starts it on OLD, checks STOP says OK, patches
# the running process with `graft apply --new NEW/libexpat.so.1`, checks that
# STOP now answers "error: parser not started", that parsing still works and
# the counter carried on, reverts, and checks OLD's answer is back.
#
# Usage: internal/realworld/livelib/expat-live.sh [GRAFT]   (needs root, apt deb-src)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
graft=${1:-$here/../../../bin/graft}
work=${REALWORLD_DIR:-/var/tmp/realworld}/expat
mkdir -p "$work"
cd "$work"
ver=2.5.0-1+deb12u2
if [ ! -f "expat_$ver.dsc" ]; then
	apt-get source -qq --download-only "expat=$ver"
fi
build() { # build DIR LASTPATCH: orig + the series up to and including LASTPATCH
	local dir=$1 last=$2
	[ -f "$dir/libexpat.so.1" ] && return
	rm -rf "$dir" && mkdir -p "$dir"
	dpkg-source -q --skip-patches -x "expat_$ver.dsc" "$dir/src" >/dev/null
	while read -r p; do
		patch -s -d "$dir/src" -p1 <"$dir/src/debian/patches/$p"
		[ "$p" = "$last" ] && break
	done <"$dir/src/debian/patches/series"
	cat >"$dir/src/expat/expat_config.h" <<'CFG'
#define BYTEORDER 1234
#define HAVE_ARC4RANDOM_BUF 0
#define HAVE_GETRANDOM 1
#define HAVE_SYSCALL_GETRANDOM 1
#define HAVE_STDINT_H 1
#define XML_CONTEXT_BYTES 1024
#define XML_DTD 1
#define XML_GE 1
#define XML_NS 1
#define XML_DEV_URANDOM 1
CFG
	(cd "$dir/src/expat" && gcc -O2 -g -fPIC -shared -DHAVE_EXPAT_CONFIG_H -I. -Ilib \
		-Wl,-soname,libexpat.so.1 -o "$dir/libexpat.so.1" lib/xmlparse.c lib/xmlrole.c lib/xmltok.c)
}
build "$work/old" expat-2.5.0-CVE-2023-52425.patch
build "$work/new" expat-2.5.0-CVE-2024-50602.patch
gcc -O2 -g -o "$work/xmlprobe" "$here/xmlprobe.c" -I"$work/old/src/expat/lib" -L"$work/old" -l:libexpat.so.1

echo "== graft diff (OLD = series up to CVE-2023-52425, NEW = + CVE-2024-50602)"
"$graft" diff "$work/old/libexpat.so.1" "$work/new/libexpat.so.1"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LD_LIBRARY_PATH="$work/old" "$work/xmlprobe" "$port" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do python3 - "$port" <<'PY' 2>/dev/null && break || sleep 0.05
import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1]))).close()
PY
done
ask() { python3 - "$port" "$1" <<'PY'
import socket,sys
s=socket.create_connection(("127.0.0.1",int(sys.argv[1]))); s.sendall((sys.argv[2]+"\n").encode())
print(s.makefile().readline().strip())
PY
}
expect() { local got; got=$(ask "$1"); if [ "$got" != "$2" ]; then echo "FAIL: $1 -> '$got', want '$2'"; exit 1; fi; echo "  $1 -> $got"; }
echo "== OLD running (pid $pid)"
expect "PARSE <a><b/></a>" "ok 1"
expect "STOP" "ok"
echo "== graft apply --new"
"$graft" apply -p "$pid" --new "$work/new/libexpat.so.1"
expect "STOP" "error: parser not started"
expect "PARSE <a>x</a>" "ok 2"
expect "PARSE <a>" "error: no element found"
"$graft" status -p "$pid"
echo "== graft revert"
"$graft" revert -p "$pid"
expect "STOP" "ok"
expect "PARSE <a/>" "ok 3"
if grep -q memfd:graft "/proc/$pid/maps"; then echo "FAIL: graft mapping left"; exit 1; fi
echo "PASS: expat CVE-2024-50602 fix patched live into a running process and reverted"
