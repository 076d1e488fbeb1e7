package tracer

import "testing"

func TestHasShstk(t *testing.T) {
	for in, want := range map[string]bool{"": false, "shstk wrss": true, "wrss": false, " shstk": true, "shstkx": false} {
		if got := hasShstk(in); got != want {
			t.Errorf("hasShstk(%q) = %v, want %v", in, got, want)
		}
	}
}
