package graft

import (
	"context"
	"fmt"
	"net"
	"sort"
	"testing"
	"time"

	"graft/internal/testutil"
)

// BenchmarkFramesPause measures what judging frames by proof adds to the
// pause: acceptd v1->v2 applied to the idle server with main and
// accept_conn on the stack, let stay once by proof and once by
// --allow-active (the same frames, no proof looked up), alternately on
// the same process; and a revert whose frame stays in new code (pending
// image) against one with no frame there. Reported: the medians' ratios.
func BenchmarkFramesPause(b *testing.B) {
	testutil.RequirePtrace(b)
	v2 := testutil.Build(b, "acceptd-v2")
	target, port := testutil.StartServer(b, "acceptd-v1")
	ctx := context.Background()
	conn := func() {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 128)
		c.Read(buf)
		c.Write([]byte("x\n"))
		c.Read(buf)
		c.Close()
		time.Sleep(50 * time.Millisecond)
	}
	var proof, flag, stayRevert, plainRevert []float64
	n := max(b.N, 15)
	for range n {
		for _, allow := range [][]string{nil, {"main", "accept_conn"}} {
			res, err := Apply(ctx, target.Pid, Source{NewBinary: v2}, ApplyOptions{AllowActive: allow, Timeout: 3 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			if allow == nil {
				proof = append(proof, float64(res.PauseUS))
				conn() // the main thread now waits in the new accept_conn
				rv, err := Revert(ctx, target.Pid, RevertOptions{Timeout: 3 * time.Second})
				if err != nil || len(rv.Pending) != 1 {
					b.Fatalf("revert: %v %+v", err, rv)
				}
				stayRevert = append(stayRevert, float64(rv.PauseUS))
				conn() // leaves the pending image; the next apply unmaps it
			} else {
				flag = append(flag, float64(res.PauseUS))
				rv, err := Revert(ctx, target.Pid, RevertOptions{Timeout: 3 * time.Second})
				if err != nil || len(rv.Pending) != 0 {
					b.Fatalf("revert: %v %+v", err, rv)
				}
				plainRevert = append(plainRevert, float64(rv.PauseUS))
			}
		}
	}
	med := func(x []float64) float64 {
		sort.Float64s(x)
		return x[len(x)/2]
	}
	b.ReportMetric(med(proof)/med(flag), "apply-proof/flag")
	b.ReportMetric(med(stayRevert)/med(plainRevert), "revert-stay/plain")
	b.ReportMetric(med(proof), "apply-proof-us")
	b.ReportMetric(med(flag), "apply-flag-us")
	b.ReportMetric(med(stayRevert), "revert-stay-us")
	b.ReportMetric(med(plainRevert), "revert-plain-us")
}
