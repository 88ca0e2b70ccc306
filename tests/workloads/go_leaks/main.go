// go_leaks - Go leak patterns for memtrace's tests, one per argument:
//
//	map         a map that grows by small objects (remember) in a warm
//	            heap (64 MiB kept from the start) with heavy churn elsewhere
//	            (churn: 32 KiB buffers dropped at once, ~250 MB/s)
//	lru         a bounded cache (4,000 entries of 16 KiB) with the same churn,
//	            filled at ~2,000 entries a second: full after ~2 s, flat after;
//	            profiled finely (MemProfileRate 4 KiB, as a program wanting
//	            an exact heap profile sets it), so that its level is flat
//	            to within a few per cent rather than the default rate's
//	            sampling noise
//	goroutines  one goroutine every 10 ms blocked for ever on a channel
//	            receive (park), made by spawn
//
// Prints "ready" on stderr once the pattern runs (stdout is the report's
// when memtrace runs it), then runs until killed.
package main

import (
	"container/list"
	"fmt"
	"os"
	"runtime"
	"time"
)

type session struct {
	id    int
	state [6]int64
}

var (
	warm     [][]byte
	sessions = map[int]*session{}
	sink     []byte
)

//go:noinline
func remember(i int) {
	sessions[i] = &session{id: i} // map leak
}

//go:noinline
func churn() {
	for {
		for k := 0; k < 80; k++ {
			sink = make([]byte, 32<<10)
			sink[0] = byte(k)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func warmUp() {
	for i := 0; i < 64; i++ {
		b := make([]byte, 1<<20)
		b[0] = 1
		warm = append(warm, b)
	}
}

type entry struct {
	key  int
	data []byte
}

type lru struct {
	max   int
	order *list.List
	byKey map[int]*list.Element
}

//go:noinline
func (c *lru) put(key int) {
	if e, ok := c.byKey[key]; ok {
		c.order.MoveToFront(e)
		return
	}
	c.byKey[key] = c.order.PushFront(&entry{key: key, data: make([]byte, 16<<10)}) // lru insert
	if c.order.Len() > c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.byKey, oldest.Value.(*entry).key)
	}
}

func park(c chan int) {
	<-c // goroutine leak
}

//go:noinline
func spawn() {
	go park(make(chan int)) // go statement
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go_leaks map|lru|goroutines")
		os.Exit(2)
	}
	warmUp()
	go churn()
	fmt.Fprintln(os.Stderr, "ready")
	switch os.Args[1] {
	case "map":
		for i := 0; ; i++ {
			remember(i)
			if i%600 == 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}
	case "lru":
		runtime.MemProfileRate = 4096
		c := &lru{max: 4000, order: list.New(), byKey: map[int]*list.Element{}}
		for i := 0; ; i++ {
			c.put(i)
			if i%20 == 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}
	case "goroutines":
		for {
			spawn()
			time.Sleep(10 * time.Millisecond)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown pattern", os.Args[1])
		os.Exit(2)
	}
}
