package graft

import (
	"bufio"
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

// hsClient is the other party of testprocs/handshake: it keeps the banner
// the server greeted it with and checks the server's proofs against it.
type hsClient struct {
	t      *testing.T
	conn   net.Conn
	r      *bufio.Reader
	banner string
}

func hsDial(t *testing.T, port int) *hsClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	c := &hsClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.banner = c.line()
	return c
}

func (c *hsClient) line() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := c.r.ReadString('\n')
	require.NoError(c.t, err)
	return strings.TrimRight(s, "\r\n")
}

func (c *hsClient) cmd(s string) string {
	c.t.Helper()
	_, err := fmt.Fprintf(c.conn, "%s\n", s)
	require.NoError(c.t, err)
	return c.line()
}

// proof is what the client derives from a banner: the value the server
// must send back for the handshake to succeed.
func hsProof(banner, nonce string) string {
	h := fnv.New64a()
	h.Write([]byte(banner + "\n" + nonce))
	return fmt.Sprintf("PROOF %016x", h.Sum64())
}

// agrees runs the handshake with a fresh nonce and reports whether the
// server proved the banner this client received.
func (c *hsClient) agrees(nonce string) bool {
	c.t.Helper()
	return c.cmd("HELLO "+nonce) == hsProof(c.banner, nonce)
}

// TestHandshakeTailMergedLiteral is issue 9's failure, live: the release
// string is stored as the tail of the banner the server hashes, and the
// release changes. Patched, the server must greet with the banner it also
// hashes, so a client still agrees with it; a diff that ended the banner
// where the release begins would patch the greeting but not the hash.
func TestHandshakeTailMergedLiteral(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "handshake-v1")
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)

	open := hsDial(t, port)
	require.Equal(t, "SRV-2.0-hs_1.0", open.banner)
	require.True(t, open.agrees("n1"), "v1 disagrees with its own client before any patch")
	require.Equal(t, "OK 1.0", open.cmd("VERSION"))

	res, err := Apply(context.Background(), target.Pid, newBin(t, "handshake-v2"), ApplyOptions{})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"send_banner", "banner_proof", "cmd_version"}, res.Functions)
	testutil.RequireReleased(t, target.Pid)

	// A new client sees the new banner and the server proves that one.
	fresh := hsDial(t, port)
	require.Equal(t, "SRV-2.0-hs_1.1", fresh.banner)
	require.True(t, fresh.agrees("n2"), "after the patch the server proves another banner than it sent")
	require.Equal(t, "OK 1.1", fresh.cmd("VERSION"))
	// The connection opened before the patch runs the new code too: its
	// proofs are now over the new banner, and its version reply is new.
	require.Equal(t, hsProof("SRV-2.0-hs_1.1", "n3"), open.cmd("HELLO n3"))
	require.Equal(t, "OK 1.1", open.cmd("VERSION"))

	rr, err := Revert(context.Background(), target.Pid, RevertOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{res.PatchID}, rr.Reverted)
	again := hsDial(t, port)
	require.Equal(t, "SRV-2.0-hs_1.0", again.banner)
	require.True(t, again.agrees("n4"), "after the revert the server proves another banner than it sent")
	require.Equal(t, text, exeText(t, target.Pid), "text byte-identical after revert")
	require.False(t, target.Exited())
}
