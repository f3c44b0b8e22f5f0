// The fleet-relay program is the fleet's cloud relay: it turns the robots'
// MQTT topics into WebSocket rooms for dashboards and carries their commands
// back to the robots. With no broker configured it runs an embedded MQTT
// broker, so one command runs the whole cloud side.
//
// Usage:
//
//	fleet-relay [--config FILE] [--listen ADDR] [--mqtt-broker URL] [--insecure-no-auth]
//	fleet-relay config example
//	fleet-relay config check [--config FILE]
//	fleet-relay passwd [--format pbkdf2|bcrypt] [--file FILE] USERNAME
//	fleet-relay --version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/robotfleet/fleetlink/cloud/config"
	"github.com/robotfleet/fleetlink/cloud/relay"
	"github.com/robotfleet/fleetlink/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "config" {
		return configCmd(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "passwd" {
		return passwdCmd(args[1:], os.Stdin, stdout, stderr)
	}
	fs := flag.NewFlagSet("fleet-relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "YAML config file (see `fleet-relay config example`)")
	listen := fs.String("listen", "", "HTTP/WebSocket address (overrides listen and FLEET_RELAY_LISTEN)")
	brokerURL := fs.String("mqtt-broker", "", "external MQTT broker URL (overrides mqtt.broker); empty: embedded broker")
	insecure := fs.Bool("insecure-no-auth", false, "allow auth off on a non-loopback listen address")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (overrides log.level)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "fleet-relay %s — MQTT → WebSocket relay for the robot fleet\n\n"+
			"Usage:\n  fleet-relay [flags]\n  fleet-relay config example\n  fleet-relay config check [--config FILE]\n"+
			"  fleet-relay passwd [--format pbkdf2|bcrypt] [--file FILE] USERNAME\n\n"+
			"Environment: FLEET_RELAY_LISTEN, FLEET_RELAY_MQTT_BROKER, FLEET_RELAY_EMBEDDED_MQTT_LISTEN,\n"+
			"FLEET_RELAY_AUTH_SECRET, FLEET_RELAY_TOPIC_PREFIX (flags win over env, env over the file).\n\nFlags:\n", version.String())
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "fleet-relay", version.String())
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fleet-relay: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	cfg, err := config.Load(*cfgPath, os.LookupEnv)
	if err != nil {
		fmt.Fprintf(stderr, "fleet-relay: %v\n", err)
		return 1
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "listen":
			cfg.Listen = *listen
		case "mqtt-broker":
			cfg.MQTT.Broker = *brokerURL
		case "insecure-no-auth":
			cfg.InsecureNoAuth = *insecure
		case "log-level":
			cfg.Log.Level = *logLevel
		}
	})
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "fleet-relay: refusing to start:\n%v\n", err)
		return 1
	}
	// Signals are caught before New: a SIGTERM while the relay starts (a
	// unit stopped at once) must shut it down cleanly, not kill it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := newLogger(cfg.Log, stderr)
	r, err := relay.New(cfg, log)
	if err != nil {
		log.Error("fleet-relay cannot start", "err", err)
		return 1
	}
	if err := r.Run(ctx); err != nil {
		log.Error("fleet-relay stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lv}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func configCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: fleet-relay config example | fleet-relay config check [--config FILE]")
		return 2
	}
	switch args[0] {
	case "example":
		_, _ = stdout.Write(config.Example)
		return 0
	case "check":
		fs := flag.NewFlagSet("config check", flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", "", "YAML config file")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		cfg, err := config.Load(*path, os.LookupEnv)
		if err == nil {
			err = cfg.Validate()
		}
		if err != nil {
			fmt.Fprintf(stderr, "fleet-relay: config invalid:\n%v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, "config ok")
		return 0
	}
	fmt.Fprintf(stderr, "fleet-relay config: unknown subcommand %q (want example or check)\n", args[0])
	return 2
}
