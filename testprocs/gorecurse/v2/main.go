// Command gorecurse serves GET /deep?n=N: a recursion N levels deep in
// main.depth, each frame holding the only pointer to a heap node of a list
// and a 256-byte local, so a request grows its goroutine's stack many
// times and the collector scans those frames; the answer is the sum over
// the list. A sample target for patching a function whose frames are on
// the stack while it grows and while the heap is collected.
//
// v1 -> v2: depth stores 2*n instead of n (the answer doubles).
//
// Usage: gorecurse PORT (listens on 127.0.0.1:PORT; logs to stderr).
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
)

type node struct {
	v    int
	next *node
}

//go:noinline
func sum(l *node) int {
	s := 0
	for ; l != nil; l = l.next {
		s += l.v
	}
	return s
}

//go:noinline
func depth(n int, acc *node) int {
	if n == 0 {
		return sum(acc)
	}
	var pad [256]byte
	pad[n%256] = byte(n)
	r := depth(n-1, &node{v: 2 * n, next: acc})
	return r + int(pad[n%256]) - int(byte(n))
}

func handleDeep(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n < 0 || n > 100000 {
		http.Error(w, "bad n", http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%d\n", depth(n, nil))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gorecurse PORT")
		os.Exit(2)
	}
	port, err := strconv.Atoi(os.Args[1])
	if err != nil || port <= 0 || port > 65535 {
		fmt.Fprintf(os.Stderr, "gorecurse: bad port %q\n", os.Args[1])
		os.Exit(2)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/deep", handleDeep)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("gorecurse listening on %s", addr)
	log.Fatal(http.Serve(l, mux))
}
