package features

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cucumber/godog"

	"github.com/vramseal/vramseal/model"
	"github.com/vramseal/vramseal/provenance"
	"github.com/vramseal/vramseal/vram"
)

// modelFixtures holds real model files and model_signing signatures.
const modelFixtures = "../testdata/models"

func (w *world) registerModels(sc *godog.ScenarioContext) {
	sc.Step(`^byte (\d+) of "([^"]*)" in a copy of "([^"]*)" is changed$`, w.changeModelByte)
	sc.Step(`^I add the model directory "([^"]*)" with the signature "([^"]*)" and the publisher's key$`, w.addSignedModel)
	sc.Step(`^I add the model file "([^"]*)"$`, w.addModelFile)
	sc.Step(`^the model "([^"]*)" is resident with (\d+) shards, verified by signature$`, w.modelResident)
	sc.Step(`^the model add is refused as an integrity failure naming "([^"]*)"$`, w.modelRefused)
	sc.Step(`^the failure names the tensor "([^"]*)"$`, w.failureNamesTensor)
}

// root returns the scenario's model root, a copy of the fixtures made on
// first use.
func (w *world) root() (string, error) {
	if w.modelRoot == "" {
		w.modelRoot = filepath.Join(w.dir, "models")
		if err := os.CopyFS(w.modelRoot, os.DirFS(modelFixtures)); err != nil {
			return "", err
		}
	}
	return w.modelRoot, nil
}

func (w *world) changeModelByte(off int64, file, dir string) error {
	root, err := w.root()
	if err != nil {
		return err
	}
	p := filepath.Join(root, dir, file)
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if off >= int64(len(b)) {
		return fmt.Errorf("%s has %d bytes", file, len(b))
	}
	b[off] ^= 0x01
	return os.WriteFile(p, b, 0o644)
}

// addModel seals the model at rel in the model root, checked against exp.
func (w *world) addModel(ctx context.Context, rel string, exp *model.Expectation, expErr error) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	root, err := w.root()
	if err != nil {
		return err
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return err
	}
	defer r.Close()
	l, err := model.Open(r, rel)
	if err != nil {
		return err
	}
	defer l.Close()
	req := l.Request(l.DefaultID(), "", exp, nil)
	w.lastErr = expErr
	if w.lastErr == nil {
		w.lastErr = l.Check(exp)
	}
	if w.lastErr != nil {
		w.lastErr = m.RejectModel(ctx, req, w.lastErr)
		return nil
	}
	w.lastModel, w.lastErr = m.SealModel(ctx, req)
	return nil
}

func (w *world) addSignedModel(ctx context.Context, dir, sig string) error {
	bundle, err := os.ReadFile(filepath.Join(modelFixtures, sig))
	if err != nil {
		return err
	}
	key, err := os.ReadFile(filepath.Join(modelFixtures, "fixture-key.pub"))
	if err != nil {
		return err
	}
	exp, expErr := model.ExpectSignature(bundle, key)
	return w.addModel(ctx, dir, exp, expErr)
}

func (w *world) addModelFile(ctx context.Context, file string) error {
	return w.addModel(ctx, file, nil, nil)
}

func (w *world) modelResident(id string, shards int) error {
	if w.lastErr != nil {
		return fmt.Errorf("model add failed: %w", w.lastErr)
	}
	mi, err := w.m.Model(id)
	if err != nil {
		return err
	}
	if len(mi.Shards) != shards {
		return fmt.Errorf("model %s has %d shards, want %d", id, len(mi.Shards), shards)
	}
	if p := mi.Provenance; !p.Verified || p.Method != provenance.MethodSignature || p.KeyFingerprint == "" {
		return fmt.Errorf("provenance = %+v, want a verified signature", p)
	}
	for i, s := range mi.Shards {
		if s.Seal.ShardIndex != i || s.Seal.ShardCount != shards {
			return fmt.Errorf("shard %s is %d of %d", s.Seal.ShardID, s.Seal.ShardIndex, s.Seal.ShardCount)
		}
	}
	return nil
}

func (w *world) modelRefused(what string) error {
	if w.lastErr == nil {
		return errors.New("the model add succeeded")
	}
	if !provenance.IsIntegrity(w.lastErr) || !strings.Contains(w.lastErr.Error(), what) {
		return fmt.Errorf("error = %v, want an integrity failure naming %q", w.lastErr, what)
	}
	return nil
}

func (w *world) failureNamesTensor(name string) error {
	var ie *vram.IntegrityError
	if !errors.As(w.lastErr, &ie) {
		return fmt.Errorf("error = %v, want an integrity failure", w.lastErr)
	}
	for _, t := range ie.Tensors {
		if strings.HasPrefix(t, name+" (") {
			return nil
		}
	}
	return fmt.Errorf("the failure names %q, not %s", ie.Tensors, name)
}
