package audit

import (
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestHTMLRendersInChromium renders report.html in headless Chromium from a
// file:// URL with networking features off, screenshots it and checks the
// screenshot is a real page (many colours, a good share of non-white pixels).
// The document's CSP (default-src 'none') forbids every fetch, and
// TestHTMLNoExternalReferences checks there is nothing to fetch; here the
// browser's network log must show no request made by the page, and a
// control page that does make one shows that the check can see it.
func TestHTMLRendersInChromium(t *testing.T) {
	img, netlog := chromiumRender(t, renderHTML(t, richReport(), nil))
	colours, nonWhite, total := screenshotStats(img)
	if colours < 50 {
		t.Errorf("got %d distinct colours in the screenshot, want at least 50 (a blank or broken page)", colours)
	}
	if share := float64(nonWhite) / float64(total); share < 0.05 {
		t.Errorf("got %.1f%% non-white pixels, want at least 5%%", 100*share)
	}
	if got := pageRequests(netlog); len(got) > 0 {
		t.Errorf("the network log shows requests initiated by the page (initiators %q)", got)
	}
	// And none for the URLs the fixture carries as data.
	for _, host := range []string{"ci.example", "evil.example"} {
		if strings.Contains(netlog, host) {
			t.Errorf("the network log mentions %s, a host that appears only as data in the report", host)
		}
	}

	// Control: the same check sees the request of a page that makes one.
	_, control := chromiumRender(t, []byte(`<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png">control</body></html>`))
	if len(pageRequests(control)) == 0 {
		t.Error("control page: its image request is not in the network log; the check above proves nothing")
	}
}

// pageRequests lists the initiators of requests made by a page. The browser
// itself makes requests (update checks, network time) that carry no
// initiating origin ("not an origin"); a page's carry its origin ("null"
// for file://).
func pageRequests(netlog string) []string {
	var out []string
	for _, m := range initiatorRE.FindAllStringSubmatch(netlog, -1) {
		if m[1] != "not an origin" {
			out = append(out, m[1])
		}
	}
	return out
}

var initiatorRE = regexp.MustCompile(`"initiator":"([^"]*)"`)

// chromiumRender loads html from a file:// URL in headless Chromium with
// networking features off and returns the screenshot and the network log.
func chromiumRender(t *testing.T, html []byte) (image.Image, string) {
	t.Helper()
	bin := tool(t, "chromium", "chromium-browser")
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	if err := os.WriteFile(page, html, 0o644); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "shot.png")
	netlog := filepath.Join(dir, "netlog.json")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--hide-scrollbars", "--window-size=1200,1600",
		"--log-net-log="+netlog, "--screenshot="+shot, "file://"+page)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("decoding screenshot: %v", err)
	}
	data, err := os.ReadFile(netlog)
	if err != nil {
		t.Fatalf("reading the network log: %v", err)
	}
	return img, string(data)
}

func screenshotStats(img image.Image) (colours, nonWhite, total int) {
	seen := map[uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			r, g, bl = r>>8, g>>8, bl>>8
			seen[r<<16|g<<8|bl] = true
			if r < 0xf0 || g < 0xf0 || bl < 0xf0 {
				nonWhite++
			}
			total++
		}
	}
	return len(seen), nonWhite, total
}
