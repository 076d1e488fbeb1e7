// Command goparked parks N goroutines, each a few frames deep, and waits:
// a target for measuring how fast goroutines are walked from outside.
//
// Usage: goparked N [spin] (prints "ready" once all N are parked, then
// sleeps until killed). With "spin", two more goroutines spin in main.spin
// without a call, so that the runtime must preempt them asynchronously
// (with GOMAXPROCS=1 they take turns through runtime.asyncPreempt), and
// one more reads the clock in a loop in main.clock (time.Now: a vDSO call
// on the thread's system stack).
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

var block = make(chan struct{})

var sink uint64

//go:noinline
func clock() {
	for {
		if time.Now().UnixNano() == 0 {
			sink++
		}
	}
}

//go:noinline
func spin(seed uint64) {
	x := seed
	for {
		x = x*6364136223846793005 + 1442695040888963407
		if x == 0 {
			sink = x
		}
	}
}

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
	if len(os.Args) > 2 && os.Args[2] == "spin" {
		go spin(1)
		go spin(2)
		go clock()
	}
	fmt.Println("ready")
	for {
		time.Sleep(time.Hour)
	}
}
