package tracer

import (
	"os"
	"syscall"
)

func sameInode(fi os.FileInfo, ino uint64) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Ino == ino
}
