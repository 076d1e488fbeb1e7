// Command banner is a fixture of elfpatch's Go diff tests: banner2 changes
// only the constant, same length, which the compiler folds into a static
// string the code reaches through a header in read-only data.
package main

import "fmt"

const version = "1.0"

//go:noinline
func banner() { fmt.Println("x " + version) }

func main() { banner() }
