package main

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// exactArgs is cobra.ExactArgs that names what is missing or extra:
// "missing FILE (usage: seckill config validate FILE)".
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return fmt.Errorf("missing %s (usage: %s %s; see %s --help)", strings.Join(names[len(args):], " and "), cmd.CommandPath(), strings.Join(names, " "), cmd.CommandPath())
		case len(args) > len(names):
			return fmt.Errorf("too many arguments: %s takes %s, got %q (see %s --help)", cmd.CommandPath(), strings.Join(names, " "), args, cmd.CommandPath())
		}
		return nil
	}
}

// flagError words a bad value like one from the environment or a file
// (badFlagValue) and adds where to look ("unknown flag: --path-ttl").
func flagError(cmd *cobra.Command, err error) error {
	return fmt.Errorf("%w (see '%s --help' for the flags it takes)", badFlagValue(cmd, err), cmd.CommandPath())
}

// buildVersion is set by the build scripts (make build, make run, make up):
// -ldflags "-X main.buildVersion=$(git describe --always --dirty)".
var buildVersion string

// version is what --version prints: buildVersion, else the module version
// and VCS revision Go stamped, and the Go version.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if buildVersion != "" {
		return buildVersion + " " + bi.GoVersion
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var rev, modified, when string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+changes"
			}
		case "vcs.time":
			when = s.Value
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += " (" + rev + modified
		if when != "" {
			v += ", " + when
		}
		v += ")"
	}
	return v + " " + bi.GoVersion
}
