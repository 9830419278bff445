package client

import (
	"errors"
	"testing"
)

// Results reach consume in the order the items were emitted, even when
// a later item's work finishes first.
func TestOrderedPipelineOrder(t *testing.T) {
	secondDone := make(chan struct{})
	var got []int
	err := orderedPipeline(3, func(emit func(int) error) error {
		for i := range 1000 {
			if err := emit(i); err != nil {
				return err
			}
		}
		return nil
	}, func(i int) (int, error) {
		switch i {
		case 0:
			<-secondDone // item 0 finishes after item 1
		case 1:
			close(secondDone)
		}
		return i * 2, nil
	}, func(v int) error {
		got = append(got, v)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1000 {
		t.Fatalf("%d results", len(got))
	}
	for i, v := range got {
		if v != i*2 {
			t.Fatalf("result %d is %d", i, v)
		}
	}
}

// The first error of any stage is returned; a failure downstream stops
// the producer (emit fails) and nothing after the failed item is
// consumed.
func TestOrderedPipelineErrors(t *testing.T) {
	errProduce, errWork, errConsume := errors.New("produce"), errors.New("work"), errors.New("consume")
	for _, tc := range []struct {
		name        string
		failProduce bool
		failWork    int // item whose work fails, -1 none
		failConsume int // item whose consume fails, -1 none
		want        error
		consumed    int
	}{
		{"none", false, -1, -1, nil, 100},
		{"produce", true, -1, -1, errProduce, 50},
		{"work", false, 30, -1, errWork, 30},
		{"consume", false, -1, 40, errConsume, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var emitErr error
			consumed := 0
			err := orderedPipeline(2, func(emit func(int) error) error {
				for i := range 100 {
					if tc.failProduce && i == 50 {
						return errProduce
					}
					if err := emit(i); err != nil {
						emitErr = err
						return err
					}
				}
				return nil
			}, func(i int) (int, error) {
				if i == tc.failWork {
					return 0, errWork
				}
				return i, nil
			}, func(i int) error {
				if i == tc.failConsume {
					return errConsume
				}
				if i != consumed {
					t.Errorf("consumed %d after %d items", i, consumed)
				}
				consumed++
				return nil
			})
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if consumed != tc.consumed {
				t.Fatalf("consumed %d, want %d", consumed, tc.consumed)
			}
			if tc.failWork >= 0 || tc.failConsume >= 0 {
				// The producer emits far fewer than 100 items ahead of
				// the failure, so it learns of it from emit.
				if !errors.Is(emitErr, errPipelineStopped) {
					t.Fatalf("producer's emit: %v", emitErr)
				}
			}
		})
	}
}
