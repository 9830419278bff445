// Package configs holds the node configuration files that ship inside the
// volo-node binary: dev.toml, the default, and node.toml, the template for
// an operator's public node.
package configs

import (
	"embed"
	"fmt"
	"sort"
)

//go:embed *.toml
var files embed.FS

// Default is the name of the configuration used when no --config is given.
const Default = "dev.toml"

// Get returns the embedded configuration file name.
func Get(name string) ([]byte, error) {
	b, err := files.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("configs: no embedded configuration %q (have %v)", name, Names())
	}
	return b, nil
}

// Names lists the embedded configuration files.
func Names() []string {
	entries, _ := files.ReadDir(".")
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}
