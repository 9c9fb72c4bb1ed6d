package export

import "testing"

// TestFirstDifferenceCSV: a changed register cell is named by its record
// and column read as CSV, also after quoted cells holding commas and line
// breaks (a comma split named the wrong column).
func TestFirstDifferenceCSV(t *testing.T) {
	for _, c := range []struct{ got, want, diff string }{
		{"a,b,c\r\n\"x,y\",1.0.1,z\r\n", "a,b,c\r\n\"x,y\",1.0.0,z\r\n",
			`record 2 (line 2), column 2 (b): bundle has "1.0.1", the entries give "1.0.0"`},
		{"a,b\r\n\"l1\nl2\",x\r\n1,2\r\n", "a,b\r\n\"l1\nl2\",x\r\n1,3\r\n",
			`record 3 (line 4), column 2 (b): bundle has "2", the entries give "3"`},
		{"a,b\r\n1,2\r\n", "a,b\r\n1,2\r\n3,4\r\n",
			`record 3: missing from the bundle, the entries give "3,4"`},
		{"a,b\r\n1,2,extra\r\n", "a,b\r\n1,2\r\n",
			`record 2 (line 2), column 3 (): bundle has "extra", the entries give ""`},
	} {
		if got := firstDifference("registers/versions.csv", []byte(c.got), []byte(c.want)); got != c.diff {
			t.Errorf("firstDifference:\n got %s\nwant %s", got, c.diff)
		}
	}
	// Not CSV any more (a stray quote): compared by lines.
	if got := firstDifference("registers/x.csv", []byte("a,b\r\n\"1,2\r\n"), []byte("a,b\r\n1,2\r\n")); got == "" || got == "contents differ" {
		t.Errorf("unparsable CSV: %q", got)
	}
}
