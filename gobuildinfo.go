package graft

import (
	"debug/buildinfo"
	"fmt"
)

type goBuildInfo struct {
	GoVersion string
	settings  map[string]string
}

func readGoBuildInfo(path string) (*goBuildInfo, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read Go build info of %s: %w", path, err)
	}
	out := &goBuildInfo{GoVersion: bi.GoVersion, settings: map[string]string{}}
	for _, s := range bi.Settings {
		out.settings[s.Key] = s.Value
	}
	return out, nil
}
