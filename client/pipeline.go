package client

import (
	"errors"
	"runtime"
	"sync"
)

// maxPipelineWorkers bounds the workers of one pipeline stage, whatever
// the number of cores.
const maxPipelineWorkers = 8

// pipelineWorkers is the number of workers of a parallel stage: one per
// core, at least 2 (so a stage overlaps with the ones around it), at most
// maxPipelineWorkers.
func pipelineWorkers() int { return min(max(runtime.GOMAXPROCS(0), 2), maxPipelineWorkers) }

// errPipelineStopped is what emit returns to the producer once the
// pipeline failed downstream; the producer returns it (or its own error).
var errPipelineStopped = errors.New("client: pipeline stopped")

// orderedPipeline runs produce in its own goroutine; each item it emits
// goes through work on one of workers goroutines, and consume gets the
// results one at a time in the order the items were emitted. At most
// 2*workers items are in flight, so memory stays bounded whatever the
// stream's length. The first error of any stage stops the others (emit
// then returns errPipelineStopped) and is returned once every goroutine
// has finished.
func orderedPipeline[In, Out any](workers int, produce func(emit func(In) error) error, work func(In) (Out, error), consume func(Out) error) error {
	type result struct {
		out Out
		err error
	}
	type job struct {
		in  In
		out chan result
	}
	jobs := make(chan job, workers)
	order := make(chan chan result, 2*workers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				o, err := work(j.in)
				j.out <- result{o, err} // buffered: never blocks
			}
		})
	}
	prodErr := make(chan error, 1)
	go func() {
		defer close(order)
		defer close(jobs)
		prodErr <- produce(func(in In) error {
			select {
			case <-stop:
				return errPipelineStopped
			default:
			}
			r := make(chan result, 1)
			select {
			case order <- r:
			case <-stop:
				return errPipelineStopped
			}
			jobs <- job{in, r} // workers never block, so this returns
			return nil
		})
	}()
	var err error
	for r := range order {
		if err != nil {
			continue // drain; the workers finish the jobs given
		}
		res := <-r
		if err = res.err; err == nil {
			err = consume(res.out)
		}
		if err != nil {
			close(stop)
		}
	}
	wg.Wait()
	perr := <-prodErr
	if err != nil {
		return err // the producer's error is then errPipelineStopped or later
	}
	return perr
}
