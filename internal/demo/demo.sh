#!/usr/bin/env bash
# make demo: patch a live login server without restarting it.
#
# testprocs/sshd v1 has an authentication bypass: it compares only as many
# password characters as the client typed, so "LOGIN alice wonder" logs in
# as alice (password "wonderland"). v2 fixes it (testprocs/sshd/VERSIONS.md).
# The demo starts v1, shows the bug, keeps one connection open, patches the
# running process with graft, and shows the fix on a new connection and on
# the connection that stayed open, with the server's state (its counters)
# intact. Then it takes the patch out again.
#
# Needs only bash (its /dev/tcp drives the line protocol) and what
# `make test` needs to build the targets.
set -euo pipefail
cd "$(dirname "$0")/../.."

G=./bin/graft
B=testprocs/build
work=$(mktemp -d)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

printf 'alice:wonderland\nbob:hunter2\n' >"$work/users"
# A free port: let the kernel pick one for a moment.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 24022)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# session FD CMD...: send each command on the open connection FD and print
# the reply.
session() {
	local fd=$1 line
	shift
	for c in "$@"; do
		printf '%s\n' "$c" >&"$fd"
		IFS= read -r -t 5 line <&"$fd" || line="(no reply)"
		printf '   > %-26s < %s\n' "$c" "${line%$'\r'}"
	done
}

# client CMD...: a new connection: banner, the commands, QUIT.
client() {
	local line
	exec {c}<>"/dev/tcp/127.0.0.1/$port"
	IFS= read -r -t 5 line <&"$c" || line="(no banner)"
	printf '   (new connection, banner %s)\n' "${line%$'\r'}"
	session "$c" "$@" QUIT
	exec {c}>&-
}

say "start sshd v1 (pid below) on 127.0.0.1:$port"
"$B/sshd-v1" "$port" -u "$work/users" 2>"$work/sshd.log" &
pid=$!
for _ in $(seq 50); do
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
	sleep 0.1
done
echo "   pid $pid, threads: $(ls /proc/$pid/task | wc -l)"

say "v1: a wrong password that is a prefix of the right one logs in (the bug)"
client "LOGIN alice wonder" "WHOAMI"

say "open a connection that stays open across the patch (not logged in yet)"
exec {open}<>"/dev/tcp/127.0.0.1/$port"
IFS= read -r -t 5 banner <&"$open"
echo "   banner ${banner%$'\r'}"
session "$open" "VERSION"

say "what changed between v1 and v2 (graft diff -o v1-v2.graft)"
$G diff "$B/sshd-v1" "$B/sshd-v2" -o "$work/v1-v2.graft"

say "patch the running process (graft apply -p $pid v1-v2.graft)"
$G apply -p "$pid" "$work/v1-v2.graft" --json >"$work/apply.json"
cat "$work/apply.json"
# the first pause_us is the apply's own; each entry of "held" has one too
pause=$(sed -n 's/.*"pause_us": *\([0-9]*\).*/\1/p' "$work/apply.json" | head -n 1)

say "graft status -p $pid (read from the process itself)"
$G status -p "$pid"

say "same process, new connection: the prefix no longer logs in"
client "LOGIN alice wonder" "LOGIN alice wonderland" "WHOAMI"

say "the connection that stayed open runs the new code too"
session "$open" "LOGIN alice wonder" "LOGIN alice wonderland" "STATS"
echo "   (STATS counts every connection since the server started: state kept)"

say "revert (graft revert -p $pid): the old behaviour is back"
$G revert -p "$pid"
client "LOGIN bob hunt" "STATS"
session "$open" "QUIT"
exec {open}>&-

say "done"
echo "   the server ran on without a restart (pid $pid all along)"
echo "   pause while the jump was written: ${pause} µs"
