// Command goserver is a small HTTP service with in-memory state, a sample
// target with a version history.
//
//	GET  /hello[?name=N]  greeting
//	ANY  /count           increments the request counter, returns its value
//	GET  /kv?key=K        the value stored under K
//	PUT  /kv?key=K        stores the request body under K
//	GET  /version         the server version
//
// Usage: goserver PORT (listens on 127.0.0.1:PORT; logs to stderr).
package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"unicode"
)

const version = "goserver/1.2.0"

// maxValue bounds a stored value, so that a client cannot grow the map
// without limit.
const maxValue = 1024

var (
	counterMu sync.Mutex
	counter   int64

	kvMu sync.Mutex
	kv   = map[string]string{}
)

// validKey is the key policy of /kv.
func validKey(k string) bool {
	return k != "" && len(k) <= 32 && k[0] != '/'
}

// greeter makes the /hello reply.
type greeter interface {
	greet(name string) string
}

type plainGreeter struct{}

func (plainGreeter) greet(name string) string {
	return "hello, " + name + "!\n"
}

var defaultGreeter greeter = plainGreeter{}

func handleHello(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" {
		name = "world"
	}
	io.WriteString(w, defaultGreeter.greet(strings.Map(func(r rune) rune {
		if r == '-' {
			return ' '
		}
		return unicode.ToUpper(r)
	}, name)))
}

func handleCount(w http.ResponseWriter, r *http.Request) {
	counterMu.Lock()
	counter++
	n := counter
	counterMu.Unlock()
	fmt.Fprintf(w, "%d\n", n)
}

func handleKV(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	if !validKey(key) {
		http.Error(w, "bad key", http.StatusBadRequest)
		return
	}
	switch r.Method {
	case http.MethodGet:
		kvMu.Lock()
		v := kv[key]
		kvMu.Unlock()
		io.WriteString(w, v)
	case http.MethodPut:
		body, err := io.ReadAll(io.LimitReader(r.Body, maxValue+1))
		if err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if len(body) > maxValue {
			http.Error(w, "value too long", http.StatusRequestEntityTooLarge)
			return
		}
		kvMu.Lock()
		kv[key] = string(body)
		kvMu.Unlock()
		io.WriteString(w, "stored\n")
	default:
		w.Header().Set("Allow", "GET, PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func handleVersion(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, version+"\n")
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: goserver PORT")
		os.Exit(2)
	}
	port, err := strconv.Atoi(os.Args[1])
	if err != nil || port <= 0 || port > 65535 {
		fmt.Fprintf(os.Stderr, "goserver: bad port %q\n", os.Args[1])
		os.Exit(2)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", handleHello)
	mux.HandleFunc("/count", handleCount)
	mux.HandleFunc("/kv", handleKV)
	mux.HandleFunc("/version", handleVersion)
	// Log only once the socket listens: whoever reads the log may connect.
	addr := "127.0.0.1:" + strconv.Itoa(port)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("goserver listening on %s", addr)
	log.Fatal(http.Serve(l, mux))
}
