package session

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// TestExamplePipelineConfigs keeps configs/pipelines/*.yaml valid: each
// decodes strictly, validates, and expands its argv with its defaults.
func TestExamplePipelineConfigs(t *testing.T) {
	files, err := filepath.Glob("../../configs/pipelines/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			require.NoError(t, err)
			var doc struct {
				Sessions Config `yaml:"sessions"`
			}
			dec := yaml.NewDecoder(bytes.NewReader(b))
			dec.KnownFields(true)
			require.NoError(t, dec.Decode(&doc))
			cfg := doc.Sessions
			require.NotEmpty(t, cfg.Pipelines)
			cfg.FillDefaults(t.TempDir())
			require.NoError(t, cfg.Validate())
			for i := range cfg.Pipelines {
				p := &cfg.Pipelines[i]
				in := map[string]any{}
				for _, d := range p.Params {
					if d.Required {
						in[d.Name] = "x"
					}
				}
				params, err := checkParams(p, in)
				require.NoError(t, err, p.Name)
				argv := expandArgv(p.Command, &Job{SessionID: "s", ModelPath: "/m/model.onnx", OutputDir: "/o", Params: params})
				for _, a := range argv {
					assert.NotRegexp(t, placeholder, a, "%s: unexpanded placeholder", p.Name)
				}
			}
		})
	}
}

// TestPipelinesDocShowsExampleScript keeps the complete example in
// docs/PIPELINES.md identical to the script the tests run.
func TestPipelinesDocShowsExampleScript(t *testing.T) {
	doc, err := os.ReadFile("../../docs/PIPELINES.md")
	require.NoError(t, err)
	script, err := os.ReadFile(examplePath(t))
	require.NoError(t, err)
	assert.Contains(t, string(doc), "```sh\n"+string(script)+"```\n")
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	assert.Contains(t, string(readme), "```sh\n"+string(script)+"```\n", "README.md shows the example script too")
}
