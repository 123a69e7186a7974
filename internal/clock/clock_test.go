package clock

import (
	"testing"
	"time"
)

func TestFakeFiresTimersInOrder(t *testing.T) {
	f := NewFake(time.Unix(1000, 0))
	a, b := f.NewTimer(2*time.Second), f.NewTimer(time.Second)
	called := make(chan time.Time, 1)
	f.AfterFunc(3*time.Second, func() { called <- f.Now() })
	f.Advance(1500 * time.Millisecond)
	select {
	case got := <-b.C():
		if want := time.Unix(1001, 0); !got.Equal(want) {
			t.Errorf("b fired at %v; want %v", got, want)
		}
	default:
		t.Fatal("b did not fire")
	}
	select {
	case <-a.C():
		t.Fatal("a fired early")
	default:
	}
	if a.Stop() != true || a.Stop() != false {
		t.Error("Stop reports whether the timer was pending")
	}
	f.Advance(2 * time.Second)
	select {
	case <-a.C():
		t.Fatal("a stopped timer fired")
	default:
	}
	if got := <-called; !got.Equal(time.Unix(1003, 500_000_000)) && !got.Equal(time.Unix(1003, 0)) {
		t.Errorf("AfterFunc ran at %v", got)
	}
	if n := f.Timers(); n != 0 {
		t.Errorf("Timers() = %d; want 0", n)
	}
}

func TestSleep(t *testing.T) {
	stop := make(chan struct{})
	if !Sleep(Real, stop, time.Millisecond) {
		t.Error("Sleep: full wait expected")
	}
	close(stop)
	if Sleep(Real, stop, time.Hour) {
		t.Error("Sleep: stop expected")
	}
}
