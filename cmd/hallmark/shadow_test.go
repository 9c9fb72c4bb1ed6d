package main

import (
	"strings"
	"testing"
)

func TestShadowProxyUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing flags", []string{"shadow", "proxy"}, "--primary, --shadow and --deployment are required"},
		{"bad primary", []string{"shadow", "proxy", "--primary", "localhost:1", "--shadow", "http://127.0.0.1:2", "--deployment", "shd_1"}, "not an absolute http(s) URL"},
		{"bad comparator", []string{"shadow", "proxy", "--primary", "http://127.0.0.1:1", "--shadow", "http://127.0.0.1:2", "--deployment", "shd_1", "--comparator", "fuzzy"}, "unknown kind"},
		{"both segments", []string{"shadow", "proxy", "--primary", "http://127.0.0.1:1", "--shadow", "http://127.0.0.1:2", "--deployment", "shd_1", "--segment-header", "X-S", "--segment-pointer", "/s"}, "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCmd(t, "", tt.args...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Fatalf("got exit %d, stderr %q; want exit 2 mentioning %q", code, stderr, tt.want)
			}
		})
	}
}
