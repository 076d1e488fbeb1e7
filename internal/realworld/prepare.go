package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// cflags are the flags both sides are built with: the distribution's gcc
// adds PIE (executables) and the build systems add PIC (libraries).
const cflags = "-O2 -g"

// prepare returns the built OLD and NEW artifacts and the roots of their
// trees, fetching and building what is not in the cache yet.
func prepare(cache string, p pair) (oldBin, newBin, oldTree, newTree string, err error) {
	oldSrc, err := fetch(cache, p.pkg, p.oldVer)
	if err != nil {
		return
	}
	newSrc := oldSrc
	if p.patch == "" {
		if newSrc, err = fetch(cache, p.pkg, p.newVer); err != nil {
			return
		}
	}
	work := filepath.Join(cache, "work", p.name)
	oldTree, newTree = filepath.Join(work, "old"), filepath.Join(work, "new")
	if err = makeTree(oldSrc, oldTree, p, true); err != nil {
		return
	}
	if err = makeTree(newSrc, newTree, p, false); err != nil {
		return
	}
	if err = build(oldTree, p); err != nil {
		return
	}
	if err = build(newTree, p); err != nil {
		return
	}
	return filepath.Join(oldTree, p.dir, p.artifact), filepath.Join(newTree, p.dir, p.artifact), oldTree, newTree, nil
}

// fetch unpacks pkg=ver with apt-get source (patches applied) and returns
// the unpacked tree.
func fetch(cache, pkg, ver string) (string, error) {
	dir := filepath.Join(cache, "src", pkg+"_"+strings.NewReplacer(":", "_", "~", "_", "+", "_").Replace(ver))
	if _, err := os.Stat(dir); err != nil {
		tmp := dir + ".tmp"
		os.RemoveAll(tmp)
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return "", err
		}
		cmd := exec.Command("apt-get", "source", "-q", pkg+"="+ver)
		cmd.Dir = tmp
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get source %s=%s: %v\n%s", pkg, ver, err, out)
		}
		if err := os.Rename(tmp, dir); err != nil {
			return "", err
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join(dir, e.Name(), "debian")); err == nil {
				return filepath.Join(dir, e.Name()), nil
			}
		}
	}
	return "", fmt.Errorf("no unpacked source tree in %s", dir)
}

// makeTree copies src to dst; in patch mode it then reverse-applies the
// series from the end down to p.patch (OLD: including it).
func makeTree(src, dst string, p pair, old bool) error {
	if _, err := os.Stat(filepath.Join(dst, ".tree-ok")); err == nil {
		return nil
	}
	os.RemoveAll(dst)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("cp %s: %v\n%s", src, err, out)
	}
	if p.patch != "" {
		series, err := readSeries(filepath.Join(dst, "debian", "patches", "series"))
		if err != nil {
			return err
		}
		k := -1
		for i, s := range series {
			if s == p.patch {
				k = i
			}
		}
		if k < 0 {
			return fmt.Errorf("%s is not in %s's debian/patches/series", p.patch, p.pkg)
		}
		stop := k + 1
		if old {
			stop = k
		}
		for i := len(series) - 1; i >= stop; i-- {
			cmd := exec.Command("patch", "-R", "-p1", "-s", "-i", filepath.Join(dst, "debian", "patches", series[i]))
			cmd.Dir = dst
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("reverse-apply %s: %v\n%s", series[i], err, out)
			}
		}
	}
	return os.WriteFile(filepath.Join(dst, ".tree-ok"), nil, 0o644)
}

func readSeries(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, strings.Fields(l)[0])
	}
	return out, sc.Err()
}

func build(tree string, p pair) error {
	stamp := filepath.Join(tree, ".build-ok")
	if _, err := os.Stat(stamp); err == nil {
		return nil
	}
	cmd := exec.Command("sh", "-c", p.build)
	cmd.Dir = filepath.Join(tree, p.dir)
	cmd.Env = append(os.Environ(), "CFLAGS="+cflags, "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s in %s: %v\n%s\n(see config.out and make.out there)", p.name, cmd.Dir, err, out)
	}
	if _, err := os.Stat(filepath.Join(tree, p.dir, p.artifact)); err != nil {
		return fmt.Errorf("build %s: %w", p.name, err)
	}
	return os.WriteFile(stamp, nil, 0o644)
}
