package ledger

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
)

// Handler serves the log read-only: the C2SP tlog-tiles paths
// (GET /checkpoint, /tile/<L>/<N>[.p/<W>], /tile/entries/<N>[.p/<W>]),
// stored checkpoints by size (/checkpoint/<size>) and JSON proofs
// (/proof/inclusion?index=N[&size=M], /proof/consistency?from=A[&to=B]).
// Full tiles are immutable and cached for a year; the checkpoint and
// partial tiles are not cached. Missing objects are 404, malformed paths 400.
func (l *Log) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /checkpoint", l.serveCheckpoint)
	mux.HandleFunc("GET /checkpoint/{size}", l.serveCheckpointAt)
	mux.HandleFunc("GET /tile/", l.serveTile)
	mux.HandleFunc("GET /proof/inclusion", l.serveInclusion)
	mux.HandleFunc("GET /proof/consistency", l.serveConsistency)
	return mux
}

const immutable = "public, max-age=31536000, immutable"

func (l *Log) serveCheckpoint(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(l.Checkpoint())
}

func (l *Log) serveCheckpointAt(w http.ResponseWriter, r *http.Request) {
	size, ok := parseDecimal(r.PathValue("size"), ^uint64(0))
	if !ok {
		httpError(w, http.StatusBadRequest, "checkpoint size is not a decimal number")
		return
	}
	n, err := l.CheckpointAt(size)
	if err != nil {
		httpErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", immutable)
	w.Write(n)
}

func (l *Log) serveTile(w http.ResponseWriter, r *http.Request) {
	level, index, width, entries, err := ParseTilePath(r.URL.Path)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	var b []byte
	if entries {
		b, err = l.ReadEntryBundle(index, width)
	} else {
		b, err = l.ReadTile(level, index, width)
	}
	if err != nil {
		httpErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if width == 0 {
		w.Header().Set("Cache-Control", immutable)
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Write(b)
}

type inclusionJSON struct {
	Index      uint64   `json:"index"`
	Size       uint64   `json:"size"`
	LeafHash   []byte   `json:"leaf_hash"`
	Hashes     [][]byte `json:"hashes"`
	Checkpoint string   `json:"checkpoint,omitempty"`
}

type consistencyJSON struct {
	From   uint64   `json:"from"`
	To     uint64   `json:"to"`
	Hashes [][]byte `json:"hashes"`
}

func queryUint(r *http.Request, name string, def uint64, required bool) (uint64, bool, string) {
	s := r.URL.Query().Get(name)
	if s == "" {
		if required {
			return 0, false, "missing query parameter " + name
		}
		return def, true, ""
	}
	v, ok := parseDecimal(s, ^uint64(0))
	if !ok {
		return 0, false, "query parameter " + name + " is not a decimal number"
	}
	return v, true, ""
}

func (l *Log) serveInclusion(w http.ResponseWriter, r *http.Request) {
	h := l.head.Load()
	index, ok, msg := queryUint(r, "index", 0, true)
	if !ok {
		httpError(w, http.StatusBadRequest, msg)
		return
	}
	size, ok, msg := queryUint(r, "size", h.size, false)
	if !ok {
		httpError(w, http.StatusBadRequest, msg)
		return
	}
	p, err := l.InclusionProof(index, size)
	if err != nil {
		httpErr(w, err)
		return
	}
	leaf, err := l.LeafHash(index)
	if err != nil {
		httpErr(w, err)
		return
	}
	out := inclusionJSON{Index: index, Size: size, LeafHash: leaf[:], Hashes: hashSlices(p)}
	if size == h.size {
		out.Checkpoint = string(h.note)
	}
	writeJSON(w, out)
}

func (l *Log) serveConsistency(w http.ResponseWriter, r *http.Request) {
	from, ok, msg := queryUint(r, "from", 0, true)
	if !ok {
		httpError(w, http.StatusBadRequest, msg)
		return
	}
	to, ok, msg := queryUint(r, "to", l.Size(), false)
	if !ok {
		httpError(w, http.StatusBadRequest, msg)
		return
	}
	p, err := l.ConsistencyProof(from, to)
	if err != nil {
		httpErr(w, err)
		return
	}
	writeJSON(w, consistencyJSON{From: from, To: to, Hashes: hashSlices(p)})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	json.NewEncoder(w).Encode(v)
}

func httpErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		httpError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrClosed):
		httpError(w, http.StatusServiceUnavailable, err.Error())
	default:
		httpError(w, http.StatusInternalServerError, err.Error())
	}
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": strings.TrimSpace(msg)})
}
