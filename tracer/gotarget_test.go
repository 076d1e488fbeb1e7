package tracer

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"graft/internal/testutil"
)

// TestGoTarget holds a Go HTTP server, whose runtime signals itself
// (SIGURG preemption) and spawns threads at will, while clients keep
// sending requests: every request must succeed, and the server must
// come out untraced and still serving.
func TestGoTarget(t *testing.T) {
	testutil.RequirePtrace(t)
	target, port := testutil.StartServer(t, "goserver-v1")
	url := fmt.Sprintf("http://127.0.0.1:%d/version", port)
	client := &http.Client{Timeout: 20 * time.Second}
	get := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var served atomic.Int64
	errs := make(chan error, 4)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if err := get(); err != nil {
					errs <- err
					return
				}
				served.Add(1)
			}
		}()
	}
	p := attach(t, target.Pid)
	for i := 0; i < 20; i++ {
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		if got, err := p.Syscall(unix.SYS_GETPID); err != nil || int(got) != target.Pid {
			t.Fatalf("remote getpid: %d, %v", got, err)
		}
		if err := p.Resume(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("request while held: %v", err)
	}
	if served.Load() == 0 {
		t.Error("no request completed")
	}
	testutil.RequireReleased(t, target.Pid)
	if err := get(); err != nil {
		t.Fatalf("after detach: %v", err)
	}
}
