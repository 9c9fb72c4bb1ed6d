package ledger

import (
	"encoding/json"
	"testing"
)

func TestHashText(t *testing.T) {
	h := LeafHashOf([]byte("x"))
	b, err := json.Marshal(map[string]Hash{"h": h})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"h":"` + h.String() + `"}`; string(b) != want {
		t.Fatalf("JSON: got %s, want %s", b, want)
	}
	var back map[string]Hash
	if err := json.Unmarshal(b, &back); err != nil || back["h"] != h {
		t.Fatalf("round trip: %v, %v", back, err)
	}
	for _, bad := range []string{"", "00", h.String() + "00", "zz" + h.String()[2:]} {
		var x Hash
		if err := x.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("UnmarshalText(%q): no error", bad)
		}
	}
}
