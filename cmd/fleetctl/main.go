// The fleetctl command is the fleet's field CLI: it lists robots and their
// sessions, starts, follows and cancels optimization sessions, pings robots,
// watches and checks what they publish, all straight over MQTT, and reads
// the wire contract (schema, validate) and mints relay tokens.
//
// Every command takes --json for one stable machine-readable shape (see
// README.md beside this file); everything robot-supplied that it prints for
// people has its control characters escaped.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/robotfleet/fleetlink/internal/version"
)

// command is one subcommand. Each lives in its own file and registers itself.
type command struct {
	name    string // "ping", or "session start" for a subcommand
	args    string // its positional arguments for the usage line, e.g. "ROBOT"
	summary string // one line for the command list
	help    string // what it does, printed by --help above the flags
	// define declares the command's flags on fs and returns the function
	// that runs it with the positional arguments. Completion calls it only
	// to learn the flags.
	define func(fs *flag.FlagSet) runFunc
}

// runFunc runs a command whose flags are parsed, with its positional args.
type runFunc func(ctx context.Context, pos []string, stdout, stderr io.Writer) error

// commands by name; register fills it from init functions.
var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// commandNames returns every command name, sorted.
func commandNames() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// subcommands returns the second words of the commands named "parent ...".
func subcommands(parent string) []string {
	var subs []string
	for _, n := range commandNames() {
		if p, sub, ok := strings.Cut(n, " "); ok && p == parent {
			subs = append(subs, sub)
		}
	}
	return subs
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "fleetctl %s — the fleet's field CLI, straight over MQTT\n\nUsage: fleetctl COMMAND [flags] [ARGS]\n\nCommands:\n", version.String())
	for _, n := range commandNames() {
		fmt.Fprintf(w, "  %-15s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'fleetctl COMMAND --help' for a command's flags. Every command takes --json.\n"+
		"Broker options come from flags, else FLEETCTL_* variables, else the --config file.\n"+
		"Exit status: 0 ok, 1 error, 2 usage, 3 session failed, 4 session cancelled,\n5 session timed out, 130 interrupted.\n")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// lookup finds the command args start with: "ping", or "session start".
// It returns the command and the arguments after its name.
func lookup(args []string) (*command, []string, bool) {
	if c, ok := commands[args[0]]; ok {
		return c, args[1:], true
	}
	if len(args) > 1 {
		if c, ok := commands[args[0]+" "+args[1]]; ok {
			return c, args[2:], true
		}
	}
	return nil, nil, false
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "--version", "-version", "version":
		fmt.Fprintln(stdout, "fleetctl", version.String())
		return 0
	case "--help", "-help", "-h", "help":
		usage(stdout)
		return 0
	}
	c, rest, ok := lookup(args)
	if !ok {
		if subs := subcommands(args[0]); len(subs) > 0 {
			fmt.Fprintf(stderr, "fleetctl %s: want a subcommand: %s\n", args[0], strings.Join(subs, ", "))
			return 2
		}
		fmt.Fprintf(stderr, "fleetctl: unknown command %q\n\n", strings.Join(args[:min(2, len(args))], " "))
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return exitCode(c.name, runCommand(ctx, c, rest, stdout, stderr), stderr)
}

// runCommand parses c's flags from args and runs it.
func runCommand(ctx context.Context, c *command, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleetctl %s [flags] %s\n\n%s\n\nFlags:\n", c.name, c.args, strings.TrimSpace(c.help))
		fs.PrintDefaults()
	}
	runner := c.define(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	return runner(ctx, pos, stdout, stderr)
}

// exitCode maps a command's error to fleetctl's exit status, printing it.
func exitCode(name string, err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, context.Canceled):
		return 130
	}
	fmt.Fprintf(stderr, "fleetctl %s: %s\n", name, clean(err.Error()))
	switch {
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errSessionTimeout):
		return 5
	case errors.Is(err, errSessionCancelled):
		return 4
	case errors.Is(err, errSessionFailed):
		return 3
	}
	return 1
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments (fleetctl send r-1 ping --timeout 3s).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err) // exit 2, as for any usage error
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
