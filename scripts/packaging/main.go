// The packaging program builds the .deb and .rpm packages of robot-agent and
// fleet-relay with nfpm, used as a library. It is its own Go module so that
// nfpm and its ~45 dependencies (go-git, ssh, PGP) stay out of the product's
// go.mod. `make packages` (scripts/packages.sh) cross-builds the binaries
// and runs it:
//
//	go run . --root ../.. --bin DIR --out DIR --version 1.2.3 [--arch amd64,arm64,arm7] [--format deb,rpm]
//
// DIR/<arch>/<binary> holds the binaries, arch in nfpm's names: amd64,
// arm64 and arm7 (deb armhf, rpm armv7hl).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// spec is one package. Paths of sources are relative to the repository root.
type spec struct {
	Name        string // package, binary, unit and user name
	Description string
	Comment     string // the system user's GECOS field
	Home        string // the system user's home
	StateDir    string // created by postinstall, deleted by purge; "" for none
	ConfigSrc   string // commented default config, installed as Config
	Config      string
	Docs        []doc // examples under /usr/share/doc/<name>/
}

type doc struct {
	src, dst string
	mode     os.FileMode
}

func (s spec) Unit() string { return s.Name + ".service" }

// User is the system user; it has the package's name.
func (s spec) User() string { return s.Name }

var specs = []spec{
	{
		Name: "robot-agent",
		Description: "Robot fleet agent (fleetlink): reports metrics, alerts and model optimization\n" +
			"sessions over MQTT and runs the optimizations the fleet asks for.",
		Comment:   "fleetlink robot agent",
		Home:      "/var/lib/robot-agent",
		StateDir:  "/var/lib/robot-agent",
		ConfigSrc: "configs/agent.example.yaml",
		Config:    "/etc/robot-agent/agent.yaml",
		Docs: []doc{
			{"configs/systemd/robot-agent.service.d/gpu-and-pipelines.conf", "examples/robot-agent.service.d/gpu-and-pipelines.conf", 0o644},
			{"configs/pipelines/fake-optimizer.yaml", "examples/pipelines/fake-optimizer.yaml", 0o644},
			{"configs/pipelines/onnxruntime-quantize.yaml", "examples/pipelines/onnxruntime-quantize.yaml", 0o644},
			{"configs/pipelines/tensorrt-trtexec.yaml", "examples/pipelines/tensorrt-trtexec.yaml", 0o644},
			{"scripts/examples/fake-optimizer.sh", "examples/pipelines/fake-optimizer.sh", 0o755},
			{"scripts/examples/ort-quantize-dynamic.py", "examples/pipelines/ort-quantize-dynamic.py", 0o755},
		},
	},
	{
		Name: "fleet-relay",
		Description: "Robot fleet relay (fleetlink): turns the robots' MQTT topics into WebSocket rooms\n" +
			"for the fleet dashboard and carries its commands back to the robots.",
		Comment:   "fleetlink relay",
		Home:      "/nonexistent",
		ConfigSrc: "configs/relay.example.yaml",
		Config:    "/etc/fleet-relay/relay.yaml",
	},
}

func main() {
	root := flag.String("root", "../..", "repository root")
	bin := flag.String("bin", "", "directory with <arch>/<binary>")
	out := flag.String("out", "", "output directory")
	version := flag.String("version", "", "package version, e.g. 1.2.3 or 0.0.0~git20260101.abc1234")
	arches := flag.String("arch", "amd64,arm64,arm7", "architectures (nfpm names)")
	formats := flag.String("format", "deb,rpm", "package formats")
	only := flag.String("package", "", "build only these packages (comma-separated); default all")
	flag.Parse()
	if *bin == "" || *out == "" || *version == "" {
		fmt.Fprintln(os.Stderr, "packaging: --bin, --out and --version are required")
		os.Exit(2)
	}
	if err := run(*root, *bin, *out, *version, split(*arches), split(*formats), split(*only)); err != nil {
		fmt.Fprintln(os.Stderr, "packaging:", err)
		os.Exit(1)
	}
}

func split(s string) []string {
	var r []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			r = append(r, f)
		}
	}
	return r
}

func run(root, bin, out, version string, arches, formats, only []string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	// Rendered maintainer scripts live here while nfpm reads them.
	tmp, err := os.MkdirTemp("", "fleetlink-packaging")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, s := range specs {
		if len(only) > 0 && !contains(only, s.Name) {
			continue
		}
		scripts, err := renderScripts(root, tmp, s)
		if err != nil {
			return err
		}
		for _, arch := range arches {
			for _, format := range formats {
				path, err := build(root, bin, out, version, arch, format, s, scripts)
				if err != nil {
					return fmt.Errorf("%s %s %s: %w", s.Name, arch, format, err)
				}
				fmt.Println(path)
			}
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// renderScripts fills the maintainer script templates for s.
func renderScripts(root, tmp string, s spec) (nfpm.Scripts, error) {
	var sc nfpm.Scripts
	for _, x := range []struct {
		name string
		dst  *string
	}{
		{"preinstall", &sc.PreInstall}, {"postinstall", &sc.PostInstall},
		{"preremove", &sc.PreRemove}, {"postremove", &sc.PostRemove},
	} {
		t, err := template.ParseFiles(filepath.Join(root, "scripts/packaging/maintainer", x.name+".sh"))
		if err != nil {
			return sc, err
		}
		var b bytes.Buffer
		if err := t.Execute(&b, s); err != nil {
			return sc, fmt.Errorf("%s %s: %w", s.Name, x.name, err)
		}
		p := filepath.Join(tmp, s.Name+"."+x.name+".sh")
		if err := os.WriteFile(p, b.Bytes(), 0o755); err != nil {
			return sc, err
		}
		*x.dst = p
	}
	return sc, nil
}

// contents lists every file and directory of s's package.
func contents(root, bin, arch string, s spec) files.Contents {
	src := func(p string) string { return filepath.Join(root, p) }
	info := func(owner, group string, mode os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Owner: owner, Group: group, Mode: mode}
	}
	configDir := filepath.Dir(s.Config)
	c := files.Contents{
		{Source: filepath.Join(bin, arch, s.Name), Destination: "/usr/bin/" + s.Name, FileInfo: info("root", "root", 0o755)},
		{Source: src("configs/systemd/" + s.Unit()), Destination: "/usr/lib/systemd/system/" + s.Unit(), FileInfo: info("root", "root", 0o644)},
		// The config may hold broker or auth secrets: readable by the
		// service's group only. A conffile: upgrades keep local edits.
		{Destination: configDir, Type: files.TypeDir, FileInfo: info("root", s.User(), 0o750)},
		{Source: src(s.ConfigSrc), Destination: s.Config, Type: files.TypeConfigNoReplace, FileInfo: info("root", s.User(), 0o640)},
		// Read by systemd (root) only.
		{Source: src("scripts/packaging/default/" + s.Name), Destination: "/etc/default/" + s.Name, Type: files.TypeConfigNoReplace, FileInfo: info("root", "root", 0o600)},
	}
	for _, d := range s.Docs {
		c = append(c, &files.Content{Source: src(d.src), Destination: "/usr/share/doc/" + s.Name + "/" + d.dst, FileInfo: info("root", "root", d.mode)})
	}
	return c
}

func build(root, bin, out, version, arch, format string, s spec, scripts nfpm.Scripts) (string, error) {
	depends := map[string][]string{"deb": {"passwd"}, "rpm": {"shadow-utils"}}[format] // useradd
	info := &nfpm.Info{
		Name:          s.Name,
		Arch:          arch,
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none",
		Release:       "1",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    "fleetlink maintainers <fleetlink@robotfleet.dev>",
		Description:   s.Description,
		Vendor:        "robotfleet",
		Homepage:      "https://github.com/robotfleet/fleetlink",
		License:       "Proprietary",
		Overridables: nfpm.Overridables{
			Depends:    depends,
			Recommends: []string{"systemd"},
			Contents:   contents(root, bin, arch, s),
			Scripts:    scripts,
			RPM:        nfpm.RPM{Summary: strings.SplitN(s.Description, "\n", 2)[0], Group: "System Environment/Daemons", Compression: "zstd"},
			Deb:        nfpm.Deb{Compression: "xz"},
		},
	}
	info = nfpm.WithDefaults(info)
	p, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	path := filepath.Join(out, p.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	info.Target = path
	if err := p.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return "", err
	}
	return path, f.Close()
}
