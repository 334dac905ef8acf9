// benchalive is the Go side of tests/bench/bench_go_client.py: CLIENTS
// goroutines, each with its own banger.Client (one connection), each a
// closed loop of Alive(ID) calls, as tests/bench/bench_api.c drives bangerd
// with N connections. Every reply must be "alive". After a warm-up it
// measures every call's latency and prints the figures bench_api prints:
//
//	calls=N seconds=S calls_per_s=R p50_us=P p99_us=Q
//
// usage: benchalive SOCKET ID CLIENTS WARMUP_MS DURATION_MS
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	banger "banger.local/client"
)

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: benchalive SOCKET ID CLIENTS WARMUP_MS DURATION_MS")
		os.Exit(2)
	}
	socket, id := os.Args[1], os.Args[2]
	clients, err1 := strconv.Atoi(os.Args[3])
	warmupMs, err2 := strconv.Atoi(os.Args[4])
	durationMs, err3 := strconv.Atoi(os.Args[5])
	if err1 != nil || err2 != nil || err3 != nil || clients < 1 {
		fmt.Fprintln(os.Stderr, "benchalive: CLIENTS, WARMUP_MS and DURATION_MS are numbers")
		os.Exit(2)
	}
	start := time.Now()
	from := start.Add(time.Duration(warmupMs) * time.Millisecond)
	until := from.Add(time.Duration(durationMs) * time.Millisecond)
	latencies := make([][]time.Duration, clients)
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- loop(socket, id, from, until, &latencies[i])
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			fmt.Fprintf(os.Stderr, "benchalive: %v\n", err)
			os.Exit(1)
		}
	}
	var all []time.Duration
	for _, l := range latencies {
		all = append(all, l...)
	}
	if len(all) == 0 {
		fmt.Fprintln(os.Stderr, "benchalive: no call completed in the window")
		os.Exit(1)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	pct := func(p int) float64 { return float64(all[(len(all)-1)*p/100]) / float64(time.Microsecond) }
	seconds := until.Sub(from).Seconds()
	fmt.Printf("calls=%d seconds=%.3f calls_per_s=%.0f p50_us=%.1f p99_us=%.1f\n",
		len(all), seconds, float64(len(all))/seconds, pct(50), pct(99))
}

// loop calls Alive until the window closes, keeping the latencies of calls that began in it.
func loop(socket, id string, from, until time.Time, out *[]time.Duration) error {
	ctx, cancel := context.WithDeadline(context.Background(), until.Add(10*time.Second))
	defer cancel()
	c, err := banger.Dial(ctx, socket)
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		t0 := time.Now()
		if t0.After(until) {
			return nil
		}
		alive, err := c.Alive(ctx, id)
		if err != nil {
			return err
		}
		if alive != banger.Alive {
			return fmt.Errorf("Alive(%s) = %s, want alive", id, alive)
		}
		if t0.After(from) && time.Now().Before(until) {
			*out = append(*out, time.Since(t0))
		}
	}
}
