package export

import (
	"fmt"
	"strings"
)

// verifyMarkdown is the bundle's VERIFY.md: the short version of
// docs/auditor-guide.md, with this bundle's numbers filled in. A bundle
// with proofs/consistency.json (consistency) has one more section; the
// others are the same for every bundle of the format, so that bundles made
// before the file existed still verify.
func verifyMarkdown(m *Manifest, consistency bool) []byte {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Verifying this hallmark audit export\n\n")
	p("This bundle exports ledger entries %d to %d (inclusive) of the log `%s`, proved against its signed\n", m.Scope.FirstIndex, m.Scope.LastIndex, m.Log.Origin)
	p("checkpoint of size %d. It was generated at %s for %s (%s).\n\n", m.Log.CheckpointSize, m.GeneratedAt, m.GeneratedBy.Name, m.GeneratedBy.ID)
	p("The quickest check is `hallmark audit verify <this bundle> --log-key log.vkey-from-the-operator`, which\n")
	p("needs no server. Every step below can also be done by hand with common tools.\n\n")
	p("## 1. Get the log key from somewhere else\n\n")
	p("`log.vkey` in this bundle is the log's Ed25519 note verifier key. A bundle can carry any key, so compare\n")
	p("it with the key the operator publishes (`curl -s $SERVER/checkpoint` shows the key name; `hallmark serve`\n")
	p("prints the key; the operator should give it to you out of band). Without that comparison you are\n")
	p("trusting this bundle on first use.\n\n")
	p("## 2. File integrity\n\n")
	p("    sha256sum -c SHA256SUMS\n\n")
	p("Every file but SHA256SUMS is listed. `manifest.json` lists every file again (name, size, SHA-256);\n")
	p("compare with `jq -r '.files[] | \"\\(.sha256)  \\(.name)\"' manifest.json | sha256sum -c`.\n\n")
	p("## 3. The manifest signature\n\n")
	p("`manifest.sig` is a signed note (c2sp.org/signed-note) by the log key. Its text is two lines:\n")
	p("`%s` and the hex SHA-256 of manifest.json. By hand, with openssl 3:\n\n", signatureHeader)
	p("    sha256sum manifest.json                      # must equal the note's second line\n")
	p("    head -n 2 manifest.sig > msg                 # the signed text, with its newline\n")
	p("    tail -n 1 manifest.sig | awk '{print $3}' | base64 -d | tail -c 64 > sig\n")
	p("    cut -d+ -f3- log.vkey | base64 -d | tail -c 32 > pub.raw\n")
	p("    (printf '\\060\\052\\060\\005\\006\\003\\053\\145\\160\\003\\041\\000'; cat pub.raw) > pub.der\n")
	p("    openssl pkeyutl -verify -pubin -keyform DER -inkey pub.der -rawin -in msg -sigfile sig\n\n")
	p("## 4. The checkpoint\n\n")
	p("`checkpoint` is a c2sp.org/tlog-checkpoint signed note: origin, tree size, base64 root hash, then the\n")
	p("signature line. Check it as in step 3, with its first three lines as the message.\n\n")
	p("## 5. Every entry is in the log, and none is missing\n\n")
	p("`entries.jsonl` has one line per entry: `{\"index\":N,\"entry\":\"<base64 of the exact stored bytes>\"}`.\n")
	p("`proofs/inclusion.jsonl` has the RFC 6962 inclusion proof of each against the checkpoint. The leaf hash\n")
	p("is SHA-256(0x00 || entry). With the checkpoint, each line is a c2sp.org/tlog-proof:\n\n")
	p("    i=%d; jq -r --argjson i $i 'select(.index==$i) | \"c2sp.org/tlog-proof@v1\\nindex \\(.index)\", .hashes[], \"\"' \\\n", m.Scope.FirstIndex)
	p("      proofs/inclusion.jsonl > entry.tlog-proof && cat checkpoint >> entry.tlog-proof\n\n")
	p("When every index from %d to %d is proved at its position in the signed tree, the range is complete\n", m.Scope.FirstIndex, m.Scope.LastIndex)
	p("and in order: an entry removed, added, altered or moved cannot verify.\n\n")
	p("## 6. What the entries say\n\n")
	p("- `policies/<digest>/`: the exact text of every policy set that decided in the range. The set digest is\n")
	p("  `(cd policies/<digest> && find . -type f | sed 's|^\\./||' | LC_ALL=C sort | xargs sha256sum) | sha256sum`.\n")
	p("  `hallmark audit verify` replays every recorded decision with it and compares the results.\n")
	p("- `blobs/<sha256>`: inputs, policy bodies, manifests and signature bundles the entries name by digest.\n")
	p("- `trust/`: the server's trusted signing keys and roots; every version signature is verified again.\n")
	p("- `evidence/`: shadow evidence summaries as the registry held them at generation time.\n")
	p("- `registers/*.csv`, `report.html`, `report.pdf`: the report. The verifier renders it again from the\n")
	p("  verified entries and compares bytes, so it proves the report says what the ledger says.\n")
	if consistency {
		b.WriteString(consistencyMarkdown(m))
	}
	return []byte(b.String())
}
