// Command closure is a fixture of elfpatch's Go diff tests: closure2 adds
// a function literal before the one closure1 has, so the compiler's
// numbering shifts (run.func1 becomes run.func2).
package main

import (
	"os"
	"sort"
)

//go:noinline
func run(xs []int) int {
	sort.Slice(xs, func(i, j int) bool { return xs[i] > xs[j] })
	sort.Slice(xs, func(i, j int) bool { return xs[i] < xs[j] })
	return xs[0]
}

func main() { os.Exit(run([]int{len(os.Args), 3, 2}) & 1) }
