// go_hoard.go - a Go program whose heap keeps growing: every 50 ms
// growHoard() makes a 1 MiB slice, touches it and appends it to a slice
// held in a global, so the garbage collector can free none of it. Go's
// heap grows by mmap from its runtime (no malloc): memtrace sees it
// through the mmap syscalls, with the Go stack that made them.
//
// Prints "ready", then grows until killed.
package main

import (
	"fmt"
	"time"
)

var hoard [][]byte

//go:noinline
func growHoard() {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = 1
	}
	hoard = append(hoard, b)
}

func main() {
	fmt.Println("ready")
	for {
		growHoard()
		time.Sleep(50 * time.Millisecond)
	}
}
