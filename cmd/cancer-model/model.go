package main

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
)

//go:embed data/breast_cancer.csv
var datasetCSV []byte

const (
	numFeatures = 30
	// The class column: 0 = malignant, 1 = benign.
	labelMalignant = "malignant"
	labelBenign    = "benign"
	splitSeed      = 20261123
	testFraction   = 0.25
)

// dataset is the parsed CSV: features and whether each row is malignant.
type dataset struct {
	X         [][]float64
	Malignant []bool
	Digest    string // sha256 of the CSV bytes
}

func loadDataset() (*dataset, error) {
	r := csv.NewReader(bytes.NewReader(datasetCSV))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("reading data set: %w", err)
	}
	if len(recs) < 2 || len(recs[0]) != 4 {
		return nil, errors.New("reading data set: missing header line")
	}
	sum := sha256.Sum256(datasetCSV)
	d := &dataset{Digest: "sha256:" + hex.EncodeToString(sum[:])}
	for i, rec := range recs[1:] {
		if len(rec) != numFeatures+1 {
			return nil, fmt.Errorf("reading data set: row %d has %d fields, want %d", i+1, len(rec), numFeatures+1)
		}
		x := make([]float64, numFeatures)
		for j := range x {
			if x[j], err = strconv.ParseFloat(rec[j], 64); err != nil {
				return nil, fmt.Errorf("reading data set: row %d field %d: %w", i+1, j, err)
			}
		}
		d.X = append(d.X, x)
		d.Malignant = append(d.Malignant, rec[numFeatures] == "0")
	}
	return d, nil
}

// split returns the row indexes of the training and held-out sets: a seeded
// shuffle, so every run (and both versions) use the same split.
func (d *dataset) split() (train, test []int) {
	idx := make([]int, len(d.X))
	for i := range idx {
		idx[i] = i
	}
	r := rand.New(rand.NewPCG(splitSeed, 0))
	r.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	nTest := int(float64(len(idx)) * testFraction)
	return idx[nTest:], idx[:nTest]
}

// spec is what distinguishes the versions.
type spec struct {
	Features []int   // which of the 30 columns
	Lambda   float64 // L2 regularisation
	Epochs   int
	Rate     float64
}

var versions = map[string]spec{
	// v1: all 30 features, light regularisation.
	"v1": {Features: seq(0, 30), Lambda: 0.01, Epochs: 600, Rate: 0.5},
	// v2: only the 10 "worst" features, stronger regularisation: a leaner
	// model that agrees with v1 on all but about 1% of rows, so a shadow run
	// can pass the default pack's agreement bound (lower 95% limit >= 0.95
	// per segment), yet has a lower held-out recall than v1.
	"v2": {Features: seq(20, 30), Lambda: 0.02, Epochs: 600, Rate: 0.5},
}

func seq(from, to int) []int {
	out := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// Model is a logistic regression on standardised features; it predicts the
// probability that a tumour is malignant.
type Model struct {
	Version  string    `json:"version"`
	Features []int     `json:"features"`
	Mean     []float64 `json:"mean"`
	Std      []float64 `json:"std"`
	Weights  []float64 `json:"weights"`
	Bias     float64   `json:"bias"`
}

// Probability returns P(malignant) for the 30 raw features.
func (m *Model) Probability(x []float64) float64 {
	z := m.Bias
	for k, j := range m.Features {
		z += m.Weights[k] * (x[j] - m.Mean[k]) / m.Std[k]
	}
	return 1 / (1 + math.Exp(-z))
}

// Label returns the predicted class.
func (m *Model) Label(x []float64) string {
	if m.Probability(x) >= 0.5 {
		return labelMalignant
	}
	return labelBenign
}

// train fits version v deterministically (full-batch gradient descent from
// zero weights).
func train(d *dataset, version string) (*Model, error) {
	sp, ok := versions[version]
	if !ok {
		return nil, fmt.Errorf("unknown version %q (want v1 or v2)", version)
	}
	trainIdx, _ := d.split()
	k := len(sp.Features)
	m := &Model{Version: version, Features: sp.Features, Mean: make([]float64, k), Std: make([]float64, k), Weights: make([]float64, k)}
	for c, j := range sp.Features {
		var s, s2 float64
		for _, i := range trainIdx {
			s += d.X[i][j]
			s2 += d.X[i][j] * d.X[i][j]
		}
		n := float64(len(trainIdx))
		m.Mean[c] = s / n
		m.Std[c] = math.Sqrt(math.Max(s2/n-m.Mean[c]*m.Mean[c], 1e-12))
	}
	z := make([][]float64, len(trainIdx))
	for r, i := range trainIdx {
		z[r] = make([]float64, k)
		for c, j := range sp.Features {
			z[r][c] = (d.X[i][j] - m.Mean[c]) / m.Std[c]
		}
	}
	grad := make([]float64, k)
	n := float64(len(trainIdx))
	for epoch := 0; epoch < sp.Epochs; epoch++ {
		clear(grad)
		var gb float64
		for r, i := range trainIdx {
			zz := m.Bias
			for c := range k {
				zz += m.Weights[c] * z[r][c]
			}
			p := 1 / (1 + math.Exp(-zz))
			y := 0.0
			if d.Malignant[i] {
				y = 1
			}
			e := p - y
			for c := range k {
				grad[c] += e * z[r][c]
			}
			gb += e
		}
		for c := range k {
			m.Weights[c] -= sp.Rate * (grad[c]/n + sp.Lambda*m.Weights[c])
		}
		m.Bias -= sp.Rate * gb / n
	}
	return m, nil
}

// Metrics are measured on the held-out split.
type Metrics struct {
	Accuracy  float64 `json:"accuracy"`
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	TestRows  int     `json:"test_rows"`
	TrainRows int     `json:"train_rows"`
}

func evaluate(m *Model, d *dataset) Metrics {
	trainIdx, testIdx := d.split()
	var tp, fp, fn, correct int
	for _, i := range testIdx {
		pred := m.Label(d.X[i]) == labelMalignant
		switch {
		case pred && d.Malignant[i]:
			tp++
		case pred && !d.Malignant[i]:
			fp++
		case !pred && d.Malignant[i]:
			fn++
		}
		if pred == d.Malignant[i] {
			correct++
		}
	}
	return Metrics{
		Accuracy:  float64(correct) / float64(len(testIdx)),
		Precision: float64(tp) / math.Max(1, float64(tp+fp)),
		Recall:    float64(tp) / math.Max(1, float64(tp+fn)),
		TestRows:  len(testIdx),
		TrainRows: len(trainIdx),
	}
}

// Card is the model card written beside the weights.
type Card struct {
	Name      string  `json:"name"`
	Version   string  `json:"version"`
	Task      string  `json:"task"`
	Algorithm string  `json:"algorithm"`
	Features  int     `json:"features"`
	Lambda    float64 `json:"l2_lambda"`
	Epochs    int     `json:"epochs"`
	SplitSeed uint64  `json:"split_seed"`
	Metrics   Metrics `json:"metrics"`
	Dataset   struct {
		Name    string `json:"name"`
		Digest  string `json:"digest"`
		Rows    int    `json:"rows"`
		License string `json:"license"`
		Source  string `json:"source"`
	} `json:"dataset"`
}

// writeModel trains version and writes model.json and model_card.json into
// dir (created if needed). Files are written to temporary names and renamed,
// so a failure leaves no partial model.
func writeModel(version, dir string) (*Card, error) {
	d, err := loadDataset()
	if err != nil {
		return nil, err
	}
	m, err := train(d, version)
	if err != nil {
		return nil, err
	}
	sp := versions[version]
	card := &Card{Name: "cancer-model", Version: version, Task: "binary classification: malignant vs benign",
		Algorithm: "logistic regression, standardised features, full-batch gradient descent", Features: len(sp.Features),
		Lambda: sp.Lambda, Epochs: sp.Epochs, SplitSeed: splitSeed, Metrics: evaluate(m, d)}
	card.Dataset.Name = "Breast Cancer Wisconsin (Diagnostic)"
	card.Dataset.Digest = d.Digest
	card.Dataset.Rows = len(d.X)
	card.Dataset.License = "CC BY 4.0"
	card.Dataset.Source = "UCI Machine Learning Repository"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating model directory: %w", err)
	}
	for name, v := range map[string]any{"model.json": m, "model_card.json": card} {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("encoding %s: %w", name, err)
		}
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
			return nil, fmt.Errorf("writing %s: %w", name, err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return card, nil
}

func readModel(dir string) (*Model, error) {
	b, err := os.ReadFile(filepath.Join(dir, "model.json"))
	if err != nil {
		return nil, fmt.Errorf("reading model: %w", err)
	}
	var m Model
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", filepath.Join(dir, "model.json"), err)
	}
	k := len(m.Features)
	if k == 0 || len(m.Mean) != k || len(m.Std) != k || len(m.Weights) != k {
		return nil, fmt.Errorf("model %s: inconsistent feature, mean, std and weight counts", dir)
	}
	for c, j := range m.Features {
		if j < 0 || j >= numFeatures || !(m.Std[c] > 0) {
			return nil, fmt.Errorf("model %s: bad feature %d", dir, c)
		}
	}
	return &m, nil
}
