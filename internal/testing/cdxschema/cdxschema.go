// Package cdxschema validates CycloneDX 1.6 JSON against the official
// schema kept in testdata/cyclonedx (offline).
package cdxschema

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/p7bundle/p7bundle/internal/testing/fixture"
)

var compiled = sync.OnceValues(func() (*jsonschema.Schema, error) {
	dir := filepath.Join(fixture.RepoRoot(), "testdata", "cyclonedx")
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	for _, name := range []string{"bom-1.6.schema.json", "spdx.schema.json", "jsf-0.82.schema.json"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		if err := c.AddResource("http://cyclonedx.org/schema/"+name, doc); err != nil {
			return nil, err
		}
	}
	return c.Compile("http://cyclonedx.org/schema/bom-1.6.schema.json")
})

// Validate reports why data is not a valid CycloneDX 1.6 JSON BOM.
func Validate(data []byte) error {
	s, err := compiled()
	if err != nil {
		return err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return err
	}
	return s.Validate(doc)
}
