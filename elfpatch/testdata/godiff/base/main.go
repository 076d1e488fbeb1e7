// Command shapes is a fixture of elfpatch's Go refusal tests: base, then
// sig (describe gains a parameter) and newtype (a new type converted to
// the interface).
package main

import "os"

type shape interface{ area() int }

// cur keeps the value in an interface the compiler cannot see through.
var cur shape

type square struct{ n int }

func (s square) area() int { return s.n * s.n }

//go:noinline
func describe(n int) int {
	cur = square{n}
	return cur.area()
}

func main() { os.Exit(describe(len(os.Args)) & 1) }
