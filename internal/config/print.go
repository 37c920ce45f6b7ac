package config

import (
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// WriteYAML prints the effective configuration in the config file's
// format, in the order of the option table.
func (c *Config) WriteYAML(w io.Writer) error {
	root := &yaml.Node{Kind: yaml.MappingNode}
	sections := map[string]*yaml.Node{}
	for _, o := range options {
		parent, name := root, o.key
		if sec, leaf, ok := strings.Cut(o.key, "."); ok {
			if sections[sec] == nil {
				sections[sec] = &yaml.Node{Kind: yaml.MappingNode}
				root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: sec}, sections[sec])
			}
			parent, name = sections[sec], leaf
		}
		var val yaml.Node
		if err := val.Encode(o.get(c)); err != nil {
			return fmt.Errorf("encode %s: %w", o.key, err)
		}
		if val.Kind == yaml.SequenceNode && len(val.Content) == 0 {
			val.Style = yaml.FlowStyle
		}
		parent.Content = append(parent.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: name}, &val)
	}
	file := c.File
	if file == "" {
		file = "none"
	}
	if _, err := fmt.Fprintf(w, "# effective configuration (file: %s; environment and flags applied)\n", file); err != nil {
		return err
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	return enc.Close()
}
