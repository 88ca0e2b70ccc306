// go_buckets.go - a Go program with a large heap profile, for the bench's
// Go part: at its start it records every allocation (MemProfileRate 1)
// while it keeps one object from each of 16,384 distinct call stacks
// (branch: a binary tree of calls 14 deep, two call sites per level), so
// that its profile holds over 10,000 buckets holding memory; then it goes
// back to the default rate and does a fixed unit of work (make and drop
// small objects, insert and delete map keys) as fast as it can, printing
// the units done in each second.
//
// Prints "ready" once its profile is built, then "units N" every second
// until killed.
package main

import (
	"fmt"
	"runtime"
	"time"
)

var (
	kept  [][]byte
	table = map[int][]byte{}
	sink  []byte
)

//go:noinline
func keep() {
	kept = append(kept, make([]byte, 64))
}

//go:noinline
func branch(depth int, path int) {
	if depth == 0 {
		keep()
		return
	}
	if path&1 == 0 {
		branch(depth-1, path>>1) // left
	} else {
		branch(depth-1, path>>1) // right
	}
}

//go:noinline
func unit(i int) {
	for k := 0; k < 16; k++ {
		sink = make([]byte, 256)
	}
	table[i%4096] = sink
	delete(table, (i+2048)%4096)
}

func main() {
	runtime.MemProfileRate = 1
	for p := 0; p < 1<<14; p++ {
		branch(14, p)
	}
	runtime.MemProfileRate = 512 * 1024
	runtime.GC()
	runtime.GC()
	fmt.Println("ready")
	i := 0
	for {
		start := time.Now()
		n := 0
		for time.Since(start) < time.Second {
			for k := 0; k < 100; k++ {
				unit(i)
				i++
				n++
			}
		}
		fmt.Println("units", n)
	}
}
