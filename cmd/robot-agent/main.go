// The robot-agent program is the fleet's on-robot daemon: it reports
// metrics, alerts and optimization sessions over MQTT and runs the
// sessions the fleet asks for. `robot-agent run` is the foreground mode the
// systemd unit uses; `install`, `start`, `stop`, ... manage the service;
// `config example` and `config check` document and validate the config.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/robotfleet/fleetlink/agent"
	"github.com/robotfleet/fleetlink/agent/config"
	"github.com/robotfleet/fleetlink/agent/service"
	"github.com/robotfleet/fleetlink/agent/session"
	"github.com/robotfleet/fleetlink/internal/version"
)

const usage = `robot-agent: the fleet's on-robot daemon (metrics, alerts, optimization sessions over MQTT).

Usage:
  robot-agent run [--config FILE]        run in the foreground (what the systemd unit runs)
  robot-agent config example             print a complete commented sample config
  robot-agent config check [--config F]  validate a config and print the effective one (secrets masked)
  robot-agent install [--config FILE] [--print-unit]
                                         install the systemd service (or print its unit)
  robot-agent uninstall | start | stop | restart | status
  robot-agent --version | --help

The config file defaults to /etc/robot-agent/agent.yaml; when that file does
not exist, run uses the defaults. Every option can be set from the
environment as ROBOT_AGENT_<PATH>, e.g. ROBOT_AGENT_MQTT_BROKER,
ROBOT_AGENT_ROBOT_ID, ROBOT_AGENT_STATE_DIR, ROBOT_AGENT_MODEL_DIRS
(colon-separated), ROBOT_AGENT_METRICS_INTERVAL, ROBOT_AGENT_TOPIC_PREFIX.
`

// Exit codes.
const (
	exitOK     = 0
	exitError  = 1 // runtime failure
	exitConfig = 2 // usage or config error: fix the command line or the file
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitConfig
	}
	switch args[0] {
	case "--version", "-version", "version":
		fmt.Fprintln(stdout, "robot-agent", version.String())
		return exitOK
	case "--help", "-help", "-h", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	case "run":
		return cmdRun(args[1:], stderr)
	case session.QuantizeChildArg:
		// Hidden: the onnx-quantize runner's child process (the runner
		// starts this binary with it; see agent/session/onnx_child.go).
		return session.QuantizeChild(os.Stdin, stdout, stderr)
	case "config":
		return cmdConfig(args[1:], stdout, stderr)
	case "install":
		return cmdInstall(args[1:], stdout, stderr)
	case "uninstall", "start", "stop", "restart":
		if err := service.Control(service.Options{}, args[0]); err != nil {
			fmt.Fprintln(stderr, "robot-agent:", err)
			return exitError
		}
		fmt.Fprintf(stdout, "robot-agent: %s done\n", args[0])
		return exitOK
	case "status":
		st, err := service.Status(service.Options{})
		fmt.Fprintln(stdout, "robot-agent:", st)
		if err != nil {
			fmt.Fprintln(stderr, "robot-agent:", err)
			return exitError
		}
		return exitOK
	}
	fmt.Fprintf(stderr, "robot-agent: unknown command %q\n\n%s", args[0], usage)
	return exitConfig
}

// configFlag parses [--config FILE]; explicit is false when the default is used.
func configFlag(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (path string, explicit bool, ok bool) {
	fs := flag.NewFlagSet("robot-agent "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&path, "config", config.DefaultPath, "config file")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return "", false, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "robot-agent %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", false, false
	}
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	return path, explicit, true
}

func load(path string, explicit bool) (config.Config, error) {
	// The default path may be missing (run on defaults); a path given on
	// the command line must exist.
	return config.Load(path, !explicit, os.Getenv)
}

func cmdRun(args []string, stderr io.Writer) int {
	path, explicit, ok := configFlag("run", args, stderr, nil)
	if !ok {
		return exitConfig
	}
	cfg, err := load(path, explicit)
	if err != nil {
		fmt.Fprintln(stderr, "robot-agent:", err)
		return exitConfig
	}
	log := agent.NewLogger(cfg.Log, stderr)
	// A small daemon with ~1 MiB of live heap: GOGC=25 keeps the heap goal
	// near 1 MiB instead of the default 4 MiB minimum, which measured 2 MiB
	// less private memory at the same CPU (one extra 0.1 ms GC every few
	// seconds). The soft limit keeps a long replay from ballooning.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(24 << 20)
	}
	a, err := agent.New(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		if errors.Is(err, agent.ErrStateDir) {
			return exitConfig
		}
		return exitError
	}
	// Package initialisation (the protocol catalog) and config loading leave
	// a few MiB of garbage; hand it back to the OS once instead of waiting
	// for the background scavenger.
	debug.FreeOSMemory()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := a.Run(ctx); err != nil {
		log.Error("stopped with an error", "err", err)
		return exitError
	}
	return exitOK
}

func cmdConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "robot-agent config: want `example` or `check [--config FILE]`")
		return exitConfig
	}
	switch args[0] {
	case "example":
		_, _ = stdout.Write(config.Example())
		return exitOK
	case "check":
		path, explicit, ok := configFlag("config check", args[1:], stderr, nil)
		if !ok {
			return exitConfig
		}
		cfg, err := load(path, explicit)
		if err != nil {
			fmt.Fprintln(stderr, "robot-agent:", err)
			return exitConfig
		}
		b, err := cfg.Masked()
		if err != nil {
			fmt.Fprintln(stderr, "robot-agent:", err)
			return exitError
		}
		fmt.Fprintf(stdout, "# %s: ok (effective config, environment applied, secrets masked)\n", path)
		_, _ = stdout.Write(b)
		return exitOK
	}
	fmt.Fprintf(stderr, "robot-agent config: unknown subcommand %q (want example or check)\n", args[0])
	return exitConfig
}

func cmdInstall(args []string, stdout, stderr io.Writer) int {
	var printUnit bool
	path, _, ok := configFlag("install", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&printUnit, "print-unit", false, "print the systemd unit instead of installing")
	})
	if !ok {
		return exitConfig
	}
	opts := service.Options{ConfigPath: path}
	if printUnit {
		u, err := service.Unit(opts)
		if err != nil {
			fmt.Fprintln(stderr, "robot-agent:", err)
			return exitError
		}
		fmt.Fprint(stdout, u)
		return exitOK
	}
	if err := service.Control(opts, "install"); err != nil {
		fmt.Fprintln(stderr, "robot-agent:", err)
		return exitError
	}
	fmt.Fprintln(stdout, "robot-agent: installed; start it with `robot-agent start` (or systemctl start robot-agent)")
	return exitOK
}
