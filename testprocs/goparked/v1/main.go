// Command goparked parks N goroutines, each a few frames deep, and waits:
// a target for measuring how fast goroutines are walked from outside.
//
// Usage: goparked N (prints "ready" once all N are parked, then sleeps
// until killed).
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

var block = make(chan struct{})

//go:noinline
func deep(n int, wg *sync.WaitGroup) int {
	if n == 0 {
		wg.Done()
		<-block
		return 0
	}
	var pad [64]byte
	pad[n%64] = byte(n)
	return deep(n-1, wg) + int(pad[n%64])
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: goparked N")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[1])
	if err != nil || n < 0 {
		fmt.Fprintf(os.Stderr, "goparked: bad count %q\n", os.Args[1])
		os.Exit(2)
	}
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		go deep(8, &wg)
	}
	wg.Wait()
	fmt.Println("ready")
	for {
		time.Sleep(time.Hour)
	}
}
