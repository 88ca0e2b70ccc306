// go_pprof.go - a Go program that serves its own profiles (net/http/pprof on
// 127.0.0.1, a port the kernel picks), for memtrace's anchor test: it
// leaks into a map (remember) and a slice of buffers (hoard) while
// churning, parks 100 goroutines on a channel, then stops allocating: two
// collections publish the profile and the collector is switched off, so
// the profile stays as it is while memtrace and `go tool pprof` read it.
//
// Prints "port N" once serving, "quiet" once the profile is still, then
// serves until killed.
package main

import (
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"runtime"
	"runtime/debug"
	"time"
)

type record struct {
	id   int
	tags [10]int64
}

var (
	records = map[int]*record{}
	hoard   [][]byte
	sink    []byte
)

//go:noinline
func remember(i int) {
	records[i] = &record{id: i}
}

//go:noinline
func keep(n int) {
	hoard = append(hoard, make([]byte, n))
}

//go:noinline
func churn() {
	for k := 0; k < 50; k++ {
		sink = make([]byte, 16<<10)
	}
}

func park(c chan int) { <-c }

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go http.Serve(ln, nil)
	fmt.Println("port", ln.Addr().(*net.TCPAddr).Port)
	for g := 0; g < 100; g++ {
		go park(make(chan int))
	}
	start := time.Now()
	for i := 0; time.Since(start) < 3*time.Second; i++ {
		remember(i)
		if i%50 == 0 {
			keep(3000)
			churn()
		}
	}
	sink = nil
	runtime.GC()
	runtime.GC()
	debug.SetGCPercent(-1)
	fmt.Println("quiet")
	select {}
}
